"""The sensitivity budget in milliseconds: at most X % of the latency (or N ms), least predicted loss.

The greedy search of ``sensitivity.py`` with predicted latency (``mutator.latency()``, a lookup in
the latency table) as the metric: from every unit full, it lowers one unit at a time, always the
move that costs the least predicted drop of score per ms saved. Latency is a step function of the
counts, so one step down a unit's ladder often saves nothing: a move goes down to the first rung
that saves time (at most ``LOOKAHEAD`` rungs). Blocks stay (the table times widths only); units
the scan did not cover stay full. The mutator's choices are as they were afterwards.
"""
from __future__ import annotations

from typing import Any

from ..mutables.block_mutable import BlockMutable
from .latency_fit import LatencyBudgetFit, check_latency_bound
from .sensitivity import Step, _ladder, _scanned_units

__all__ = ["fit_latency_sensitivity_budget", "LOOKAHEAD"]

LOOKAHEAD = 8  # rungs a move may skip to reach one that saves time


def _move(mutator: Any, name: Any, ladder: list[Step], level: int, now_ms: float) -> tuple[int, float] | None:
    """``(rung, ms saved)`` of the unit's first rung below ``level`` that saves time, or None."""
    for j in range(level + 1, min(len(ladder), level + 1 + LOOKAHEAD)):
        saved = now_ms - mutator.latency(choices={name: ladder[j].choice}).ms
        if saved > 0:
            return j, saved
    return None


def fit_latency_sensitivity_budget(mutator: Any, sensitivity: Any, keep: float | None = None,
                                   max_ms: float | None = None) -> LatencyBudgetFit:
    """Choices whose predicted latency is at most ``keep`` of the full model's (or ``max_ms``) with
    the least predicted loss of score (see the module docstring); ``met`` is False where even
    lowering every scanned unit to its smallest choice is slower."""
    check_latency_bound(keep, max_ms)
    scanned = [(u, key) for u, key in _scanned_units(mutator, sensitivity) if not isinstance(u, BlockMutable)]
    if not scanned:
        raise ValueError("the sensitivity table covers no channel unit of this mutator (latency: widths only)")
    units = mutator.mutable_units
    full = {u.name: u.validate_choice(u.max_choice) for u in units}
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in units]
    try:
        ladders = {u.name: _ladder(u, key, sensitivity) for u, key in scanned}
        mutator.set_choices(full)
        now = mutator.latency()
        bound = keep * now.original_ms if keep is not None else float(max_ms)
        level = dict.fromkeys(ladders, 0)
        while now.ms > bound:
            best, best_key = None, None
            for name, ladder in ladders.items():
                move = _move(mutator, name, ladder, level[name], now.ms)
                if move is None:
                    continue
                j, saved_ms = move
                key = ((ladder[j].drop - ladder[level[name]].drop) / saved_ms, -saved_ms)
                if best_key is None or key < best_key:
                    best, best_key = (name, j), key
            if best is None:
                break  # every scanned unit as small as it goes
            level[best[0]] = best[1]
            mutator.set_choices({best[0]: ladders[best[0]][best[1]].choice})
            now = mutator.latency()
        choices = {**full, **{name: ladders[name][i].choice for name, i in level.items()}}
    finally:
        for mutable, state in saved:
            mutable.restore(state)
    latency = mutator.latency(choices=choices)
    keep_fraction = keep if keep is not None else min(1.0, bound / latency.original_ms)
    return LatencyBudgetFit(choices, mutator.resources(choices=choices), keep_fraction, "latency", "sensitivity",
                            latency, bound)
