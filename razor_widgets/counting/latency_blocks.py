"""Depth in the latency prediction: a dropped block's layers and ops leave the latency table's sum.

The table times each pruned layer (by module path) and each other op whose tensors follow some
units (named ``scope:op#index``, the scope being the module whose forward made the call). A
dropped block leaves the export whole, so every entry inside its module path goes, its residual
add included. The calibration's factor (``LatencyTable.combine``: how a layer of these sizes runs
among the others) stays the one of the widths: the layers left keep their sizes. What is in no
table entry (frozen layers, the block's share of the calibrated rest) stays in the prediction.
"""
from __future__ import annotations

from typing import Any

__all__ = ["block_rows", "choice_owner", "combine_without", "dropped_share"]


def _owner(layer_name: str) -> str:
    """The module path an entry belongs to: a layer's own path, an op's scope (``model``: the root)."""
    if ":" in layer_name and "#" in layer_name:  # an op: "scope:name#index"
        scope = layer_name.split(":", 1)[0]
        return "" if scope == "model" else scope
    return layer_name


def _inside(owner: str, path: str) -> bool:
    return owner == path or owner.startswith(path + ".")


def block_rows(table: Any, path: str) -> list[int]:
    """The indices of the table's entries (layers and ops) inside the module at ``path``."""
    return [i for i, layer in enumerate(table.layers) if _inside(_owner(layer.name), path)]


def dropped_share(counter: Any) -> tuple[float, int]:
    """``(ms, output elements)`` of the table entries inside the dropped blocks of a
    ``LatencyCounter`` at its units' kept channels (0, 0 when no block is dropped). Each entry is
    counted once, also where dropped blocks nest."""
    blocks = [b for b in getattr(counter.counter, "_blocks", []) if b.dropped]
    if not blocks:
        return 0.0, 0
    rows = counter.__dict__.setdefault("_block_rows", {})
    chosen: set[int] = set()
    for block in blocks:
        if block.path not in rows:
            rows[block.path] = block_rows(counter.table, block.path)
        chosen.update(rows[block.path])
    kept, fast = counter._kept, counter._fast
    return (sum(fast[i][0](kept) for i in chosen), sum(fast[i][1](kept) for i in chosen))


def choice_owner(mutator: Any, key: Any) -> Any:
    """The unit or block a choice's key names (``KeyError`` naming it when there is none)."""
    is_block = getattr(mutator, "is_block_key", None)
    return mutator.block(key) if is_block is not None and is_block(key) else mutator.unit(key)


def combine_without(table: Any, ms: float, elements: float, gone_ms: float, gone_elements: float) -> float:
    """The calibrated prediction of a layer sum ``ms`` (``elements``) less a dropped part: the
    factor ``scale + quad * ms / full`` read at the whole sum (the widths), applied to what is left."""
    if not gone_ms and not gone_elements:
        return table.combine(ms, elements)
    quad = table.quad * ms / table.full_layers if table.full_layers > 0 else 0.0
    return ((table.scale + quad) * (ms - gone_ms) + table.rest_ms
            + table.rest_ms_per_element * (elements - gone_elements))
