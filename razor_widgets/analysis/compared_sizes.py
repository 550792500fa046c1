"""Channel counts the forward compares (``assert x.shape[1] == self.channels``).

A comparison's result depends on the numbers, so pruning could flip it. Two forms keep it
whatever is pruned, and are resolved here before the union-find:

* a channel count compared with a plain int attribute of the same value: the attribute counts
  those channels, and the export sets it to how many are kept (as it does for ``num_heads``);
* two channel counts of the same value: their channels are pruned together (unioned in order).

Every other comparison stays a value use: the channels (and an attribute's elements) are fixed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..trace.traced_size import COMPARED, AttrRef, attribute_sources, shape_sources

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


def _line(ctx: AnalysisContext, ref: Any, dim: int) -> torch.Tensor | None:
    """The elements along a channel dim (None when it is not one: batch, spatial, constant)."""
    ids = ctx.get(ref)
    n = ref.shape[dim]
    if n < 2 or ids.shape[dim] != n:
        return None
    line = ids.movedim(dim, 0).reshape(n, -1)[:, 0]
    return line if bool((line >= 0).all()) else None


def resolve_comparisons(ctx: AnalysisContext, uses: list[tuple]) -> list[tuple]:
    """Resolve the comparisons that pruning keeps; returns the uses left (value uses)."""
    left = []
    for use in uses:
        sources, reason, value = use
        if COMPARED not in reason or not _kept_by_pruning(ctx, sources, value):
            left.append(use)
    return left


def _kept_by_pruning(ctx: AnalysisContext, sources: tuple, value: int) -> bool:
    shapes, attrs = shape_sources(sources), attribute_sources(sources)
    lines = [_line(ctx, ref, dim) for ref, dim in shapes]
    if not lines or any(line is None or line.numel() != value for line in lines):
        return False
    if len(shapes) != len(sources) - len(attrs) or len(attrs) > 1:
        return False
    if attrs and (len(lines) != 1 or not isinstance(attrs[0], AttrRef) or attrs[0].value != value):
        return False
    if attrs:
        ctx.count_with_attribute(attrs[0], lines[0])
    for line in lines[1:]:
        ctx.space.union(lines[0], line)
    return len(lines) > 1 or bool(attrs)
