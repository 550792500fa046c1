"""Depth in the uniform and L1 budgets: at a level that keeps a fraction of the channels, the
same fraction of the blocks is kept, the least important dropped first (``block_importance``).
The sensitivity budget needs none of this: a scanned block is one more step of its greedy search."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def with_blocks(spread: Callable[[float], dict[Any, Any]], mutator: Any,
                scores: dict[str, float]) -> Callable[[float], dict[Any, Any]]:
    """``spread(level)`` that also drops the ``floor((1 - level) * n)`` least important of the
    ``n`` scored blocks (``ValueError`` for a name that is not a removable block)."""
    if not isinstance(scores, dict):
        raise TypeError(f"block_scores must be a dict of block name to importance, got {type(scores).__name__}")
    removable = {b.name for b in getattr(mutator, "removable_blocks", [])}
    unknown = [name for name in scores if name not in removable]
    if unknown:
        raise ValueError(f"block_scores names blocks this mutator cannot drop: {', '.join(map(repr, unknown[:3]))}")
    order = sorted(scores, key=lambda name: (scores[name], name))

    def combined(level: float) -> dict[Any, Any]:
        dropped = int((1.0 - level) * len(order) + 1e-9)
        return {**spread(level), **{name: "drop" if i < dropped else "keep" for i, name in enumerate(order)}}
    return combined
