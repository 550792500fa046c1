"""Sizes given to ``split`` along a channel dim (``torch.split(x, [self.d, self.d], dim=1)``).

The code names the size of every part. After pruning those numbers must still be right: a part
sized by a plain int attribute read in the forward is counted by it (the export sets it to the
kept channels, and every part it sizes is pruned alike); a part sized by any other number (a
literal, a size computed from a shape) keeps its channels fixed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..trace.traced_size import bare_attribute

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext
    from ..trace.graph import Node


def _sizes_and_dim(node: Node) -> tuple[object, int]:
    sizes = node.args[1] if len(node.args) > 1 else next(
        (node.kwargs[k] for k in ("split_size_or_sections", "split_size", "split_sizes") if k in node.kwargs), None)
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    return sizes, dim


def check_split_sizes(ctx: AnalysisContext, node: Node, source: torch.Tensor, parts: list[torch.Tensor]) -> None:
    """``source`` and ``parts``: the full id tensors of the split input and its outputs."""
    sizes, dim = _sizes_and_dim(node)
    if sizes is None or not isinstance(dim, int):
        return
    dim %= source.dim()
    if source.shape[dim] < 2 or not bool((source.movedim(dim, 0) != source.movedim(dim, 0)[:1]).any()):
        return  # not a channel dim: the same ids all along it
    per_part = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes] * len(parts)
    for part, size in zip(parts, per_part):
        line = part.movedim(dim, 0).reshape(part.shape[dim], -1)[:, 0]
        attr = bare_attribute(size)
        if attr is not None and attr.value == line.numel():
            ctx.count_with_attribute(attr, line)
        else:
            ctx.fix(line, f"split into parts of the fixed size {int(size)} by {ctx.describe()}")
