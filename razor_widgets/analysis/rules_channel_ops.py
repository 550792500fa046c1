"""Rules of ops that move or pair channels in fixed patterns: ``F.glu`` (two halves, one output),
``F.channel_shuffle`` (the same position in every group moves together), ``F.unfold`` (im2col:
each channel becomes its kernel positions, channel-major) and ``F.fold`` (the inverse)."""
from __future__ import annotations

import math

from ..channels.context import AnalysisContext
from ..layers.base import group_union, node_arg
from ..trace.graph import Node
from .rules_movement import first_input, movement


def glu(ctx: AnalysisContext, node: Node) -> None:
    """``glu(x, dim)`` = ``a * sigmoid(b)`` of the two halves of ``dim``: output channel ``i``
    is input channels ``i`` and ``i + C/2``, pruned together."""
    x, out = first_input(node), node.output_refs()[0]
    dim = node_arg(node, 1, "dim", -1) % len(x.shape)
    ids = ctx.read(x, dim)
    half = ids.numel() // 2
    ctx.space.union(ids[:half], ids[half:])
    ctx.write(out, dim, ids[:half])


def channel_shuffle(ctx: AnalysisContext, node: Node) -> None:
    """``channel_shuffle(x, groups)``: a reshape to ``(groups, C / groups)`` and a transpose; the same
    position in every group is pruned together (so the shuffle of the kept channels is the kept
    channels of the shuffle), then the ids are replayed."""
    x = first_input(node)
    groups = node_arg(node, 1, "groups")
    if len(x.shape) < 2 or not isinstance(groups, int) or x.shape[1] % groups:
        return ctx.unknown(node)
    group_union(ctx, ctx.read(x, 1), groups)
    return movement(ctx, node)


def _kernel_positions(node: Node, spatial: int) -> int:
    kernel = node_arg(node, 1 if node.name == "unfold" else 2, "kernel_size")
    return math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel ** spatial


def im2col(ctx: AnalysisContext, node: Node) -> None:
    """``F.unfold(x, kernel_size, ...)``: ``(N, C, H, W)`` to ``(N, C * K, L)``, channel ``c``
    becoming positions ``c * K .. c * K + K - 1`` of dim 1 (K kernel positions)."""
    x, out = first_input(node), node.output_refs()[0]
    dim = len(x.shape) - 3  # batched: 1; unbatched: 0
    if dim < 0:
        return ctx.unknown(node)
    ids = ctx.read(x, dim)
    ctx.write(out, dim, ids.repeat_interleave(_kernel_positions(node, 2)))
    return None


def col2im(ctx: AnalysisContext, node: Node) -> None:
    """``F.fold(x, output_size, kernel_size, ...)``: ``(N, C * K, L)`` to ``(N, C, H, W)``: each
    block of K positions of dim 1 is one output channel."""
    x, out = first_input(node), node.output_refs()[0]
    dim = len(x.shape) - 2  # batched: 1; unbatched: 0
    k = _kernel_positions(node, 2)
    if dim < 0 or x.shape[dim] % k:
        return ctx.unknown(node)
    blocks = ctx.read(x, dim).reshape(-1, k)
    ctx.space.union(blocks[:, :1].expand_as(blocks), blocks)
    ctx.write(out, dim, blocks[:, 0].contiguous())
    return None


CHANNEL_OPS = {"glu": glu, "channel_shuffle": channel_shuffle, "native_channel_shuffle": channel_shuffle,
               "fold": col2im}
