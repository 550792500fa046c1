"""The channel rules: one table that says, per op, how channels flow from inputs to outputs.

A rule gets the analysis context and the recorded node. Four kinds cover almost everything:

* ``passthrough``: elementwise in one tensor (activations, dropout, casts);
* ``elementwise``: several tensors broadcast together; channels at the same place are one;
* ``movement``: data moves but is not mixed (view, permute, cat, split, getitem...): the op is
  replayed on the id tensor itself, so every index and shape argument is handled exactly;
* ``layer``: modules with weights, which read their input channels and write fresh output
  channels (or couple both, as norms and depthwise convs do).

Anything not in the table makes the channels it touches non-prunable, with a warning.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from .analysis import AnalysisContext
from .channel_space import CONST, NONE, compress, varying_dims
from .traced_size import TracedSize, bare_attribute, shape_sources
from .tracing import Node, TensorRef

Rule = Callable[[AnalysisContext, Node], None]


def _first_ref(node: Node) -> TensorRef:
    return node.input_refs()[0]


# -- generic rules ----------------------------------------------------------------------------
def passthrough(ctx: AnalysisContext, node: Node) -> None:
    ids = ctx.get(_first_ref(node))
    for ref in node.output_refs():
        ctx.set(ref, ids if ids.dim() == len(ref.shape) else ids.expand(ref.shape))


def creation(ctx: AnalysisContext, node: Node) -> None:
    for ref in node.output_refs():
        ctx.set(ref, torch.full([1] * len(ref.shape), CONST, dtype=torch.long))


def elementwise(ctx: AnalysisContext, node: Node) -> None:
    """Broadcast operands together: channels at the same position are one set of channels."""
    for arg in [*node.args, *node.kwargs.values()]:
        if isinstance(arg, TracedSize):  # x / C: the data is scaled by a channel count
            ctx.fix_size_sources(arg.sources, f"its channel count scales data in {ctx.describe()}")
    out = node.output_refs()[0]
    refs = [r for r in node.input_refs() if len(r.shape) <= len(out.shape)]
    ids = [ctx.get(r) for r in refs]
    ids = [i.reshape((1,) * (len(out.shape) - i.dim()) + tuple(i.shape)) for i in ids]
    shapes = [(1,) * (len(out.shape) - len(r.shape)) + tuple(r.shape) for r in refs]
    vary = {d for i in ids for d in varying_dims(i)}
    part = [i for i, s in zip(ids, shapes) if all(s[d] == out.shape[d] for d in vary)]
    if not part:
        ctx.set(out, torch.full([1] * len(out.shape), CONST, dtype=torch.long))
        return
    shape = torch.broadcast_shapes(*[tuple(i.shape) for i in part])
    stack = torch.stack([i.expand(shape) for i in part])
    valid = stack >= 0
    any_valid = valid.any(0)
    rep = torch.where(valid, stack, torch.iinfo(torch.long).max).min(0).values
    rep = torch.where(any_valid, rep, torch.where((stack == NONE).any(0), NONE, CONST))
    for layer in stack:
        ctx.space.union(rep, layer)
    mixed = any_valid & (~valid).any(0)
    if bool(mixed.any()):
        ctx.fix(rep[mixed], f"mixed with constant data at {ctx.describe()}")
    ctx.set(out, rep)


def _swap_refs(ctx: AnalysisContext, tree):
    """Float tensors become their id tensors; integer and bool tensors (indices) keep values."""

    def swap(x):
        if not isinstance(x, TensorRef):
            return x
        return ctx.full(x) if x.is_float else ctx.graph.values[x.handle]

    return tree_map(swap, tree)


def movement(ctx: AnalysisContext, node: Node) -> None:
    """Replay the op on the id tensors: exact for every shape and index argument."""
    if not _first_ref(node).is_float:  # index arithmetic, not data: no channels
        return creation(ctx, node)
    args = _swap_refs(ctx, node.args)
    kwargs = _swap_refs(ctx, node.kwargs)
    if node.name == "pad":
        if len(args) > 3:
            args = (*args[:3], CONST, *args[4:])
        else:
            kwargs["value"] = CONST
    if node.name == "__setitem__" and len(args) > 2 and not isinstance(args[2], torch.Tensor):
        args = (*args[:2], CONST)  # a number written into the data, not an element id
    gathered = _table_rows(ctx, node)
    if gathered:
        args = (_rows_as_one(ctx, args[0], gathered), *args[1:])
    try:
        out = node.target(*args, **kwargs)
    except Exception:  # the op does not accept int64 tensors: no rule after all
        return ctx.unknown(node)
    if node.name == "pad":
        out = _pad_positions_keep_channels(ctx.get(_first_ref(node)), out, node)
    if node.name == "__setitem__":
        ctx.set(node.args[0], args[0])
        return
    out_leaves, _ = tree_flatten(out)
    refs = node.output_refs()
    out_ids = [x for x in out_leaves if isinstance(x, torch.Tensor)]
    if node.name in CHUNKS and len(out_ids) > 1:
        if all(o.shape == out_ids[0].shape for o in out_ids):
            for other in out_ids[1:]:  # equal parts of the new size: same positions in each
                ctx.space.union(out_ids[0], other)
        else:
            ctx.fix(args[0], f"uneven chunks in {ctx.describe()}")
    elif node.name in SLICES:
        ctx.check_slices(args[0], out_ids, f"channels selected by fixed indices in {ctx.describe()}")
    for ref, ids in zip(refs, out_ids):
        ids = compress(ids)
        if node.name in RESHAPES:
            _keep_computed_sizes(ctx, node, out_ids[0])
            ids = _resized_channels(ctx, ids, _target_shape(node, ids.dim()))
        ctx.set(ref, ids)


def _resized_channels(ctx: AnalysisContext, ids: torch.Tensor, target: list) -> torch.Tensor:
    """The channel dims a reshape writes: each must be sized so that pruning still fits.

    * one dim sized by a module attribute (ViT's ``self.hidden_dim``): the export updates it;
    * a dim split as ``(heads, head_dim)`` with ``heads`` an attribute: whole heads are pruned
      (``attention='heads'``): each head becomes one element, so the ids returned vary along
      the heads dim only, and the export updates the attribute;
    * any other split keeps its innermost dim whole (the same positions in every block), and a
      size written as a plain number (not ``-1``, not computed from a shape) stays fixed.
    """
    vary = varying_dims(ids)
    if not vary:
        return ids
    sizes = [target[d] for d in vary]
    attrs = [bare_attribute(size) for size in sizes]
    if len(vary) == 1:
        if attrs[0] is not None:
            ctx.count_with_attribute(attrs[0], ids.reshape(-1))
        elif not _fits_pruning(sizes[0]):
            ctx.fix(ids, f"reshaped to the fixed size {sizes[0]} by {ctx.describe()}")
        return ids
    heads = [i for i, attr in enumerate(attrs[:-1]) if attr is not None]
    if ctx.attention == "heads" and heads:
        dim = vary[heads[-1]]
        moved = ids.movedim(dim, 0)
        per_head = moved.reshape(moved.shape[0], -1)
        ctx.space.union(per_head[:, :1].expand_as(per_head), per_head)
        ctx.count_with_attribute(attrs[heads[-1]], per_head[:, 0])
        return compress(per_head[:, :1].expand_as(per_head).reshape(moved.shape).movedim(0, dim))
    inner = vary[-1]
    lines = ids.movedim(inner, -1).reshape(-1, ids.shape[inner])
    ctx.space.union(lines[:1].expand_as(lines), lines)
    if not _fits_pruning(sizes[-1]):
        ctx.fix(ids, f"split to the fixed size {sizes[-1]} by {ctx.describe()}")
    return ids


def _fits_pruning(size: int) -> bool:
    """A reshape size that follows pruning: ``-1``, or computed from a tensor's shape."""
    return size == -1 or (isinstance(size, TracedSize) and bool(shape_sources(size.sources)))


def _table_rows(ctx: AnalysisContext, node: Node) -> list[int]:
    """Dims of a parameter read through an index tensor (``table[index]``, ``index_select``):
    rows looked up by position, as in a relative-position bias table, are not channels."""
    src = _first_ref(node)
    if src.param is None:
        return []
    if node.name == "index_select":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return [dim % len(src.shape)] if isinstance(dim, int) else []
    if node.name != "__getitem__" or len(node.args) < 2:
        return []
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if any(i is Ellipsis or i is None for i in index):
        return []
    return [d for d, i in enumerate(index) if isinstance(i, TensorRef)]


def _rows_as_one(ctx: AnalysisContext, ids: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Join the elements along ``dims`` and return ids that no longer vary along them."""
    for dim in dims:
        lines = ids.movedim(dim, -1).reshape(-1, ids.shape[dim])
        ctx.space.union(lines[:, :1].expand_as(lines), lines)
        ids = ids.narrow(dim, 0, 1).expand_as(ids)
    return ids


def _pad_positions_keep_channels(src: torch.Tensor, out: torch.Tensor, node: Node) -> torch.Tensor:
    """Padding along dims that hold no channels (spatial, tokens) adds positions, not channels:
    those dims keep the ids they had instead of constant ones."""
    pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", ())
    for i in range(len(pads) // 2):
        dim = out.dim() - 1 - i
        if src.shape[dim] == 1 and out.shape[dim] > 1:
            out = out.narrow(dim, max(int(pads[2 * i]), 0), 1)
    return out


def _target_shape(node: Node, ndim: int) -> list:
    """The target shape of a view/reshape/unflatten as the code gave it (ints, -1 and traced
    sizes); -1 (inferred) for dims the op takes from elsewhere (flatten, view_as)."""
    if node.name in ("view", "reshape"):
        shape = node.kwargs.get("shape", node.args[1:])
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        if len(shape) == ndim:
            return list(shape)
    if node.name == "unflatten" and len(node.args) >= 3:
        sizes = list(node.args[2])
        start = node.args[1] % (ndim - len(sizes) + 1)
        return [-1] * start + sizes + [-1] * (ndim - start - len(sizes))
    return [-1] * ndim


def _target_sizes(node: Node, ndim: int) -> list[tuple[int, TracedSize]]:
    """(output dim, size) of every traced size in a view/reshape/unflatten target shape."""
    return [(i, s) for i, s in enumerate(_target_shape(node, ndim)) if isinstance(s, TracedSize)]


def _block_of(shape: tuple[int, ...], dim: int, size: int) -> tuple[int, int] | None:
    """The shortest run of dims holding ``dim`` whose sizes multiply to ``size``."""
    best = None
    for a in range(dim, -1, -1):
        for b in range(dim, len(shape)):
            n = 1
            for d in range(a, b + 1):
                n *= shape[d]
            if n == size and (best is None or b - a < best[1] - best[0]):
                best = (a, b)
    return best


def _lines(ids: torch.Tensor, dims: list[int], n: int, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The distinct lines of compressed ``ids`` along ``dims`` (expanded to ``n`` elements)."""
    shape = shape if shape is not None else [n if d == dims[0] else s for d, s in enumerate(ids.shape)]
    ids = ids.expand([shape[d] if d in dims else s for d, s in enumerate(ids.shape)])
    moved = ids.movedim(dims, list(range(ids.dim() - len(dims), ids.dim())))
    return moved.reshape(-1, n).unique(dim=0)


def _keep_computed_sizes(ctx: AnalysisContext, node: Node, out: torch.Tensor) -> None:
    """``reshape(..., heads, C // heads)`` with ``C`` read from another tensor's channel dim: after
    pruning, the dims computed from ``C`` must still hold the kept channels, so those channels
    are made one with the source's, position by position (nothing to do when they are the same
    channels, as in a channel shuffle)."""
    for dim, size in _target_sizes(node, out.dim()):
        for ref, src_dim in shape_sources(size.sources):
            if ctx.get(ref).shape[src_dim] == 1:
                continue  # a batch or spatial dim
            n = ref.shape[src_dim]
            src = _lines(ctx.get(ref), [src_dim], n)
            block = _block_of(tuple(out.shape), dim, n)
            if block is None:
                reason = f"a size computed from its channel count does not fit in {ctx.describe()}"
                ctx.fix(src, reason)
                ctx.fix(out, reason)
                continue
            lines = _lines(compress(out), list(range(block[0], block[1] + 1)), n, out.shape)
            line = src[0]
            if len(src) == 1 and all(torch.equal(x.sort().values, line.sort().values) for x in lines):
                continue
            for other in (lines, src):
                ctx.space.union(other, line.expand_as(other))
                const = (line < 0).expand_as(other) | (other < 0)
                ctx.fix(torch.cat([other[const], line.expand_as(other)[const]]),
                        f"a size computed from a channel count in {ctx.describe()} meets constant data")


def reduction(ctx: AnalysisContext, node: Node) -> None:
    """Reductions and softmax: fine across non-channel dims, no rule across channel dims."""
    src = _first_ref(node)
    ids = ctx.get(src)
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if node.name == "normalize":  # normalize(x, p=2.0, dim=1)
        dims = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 1)
    ndim = len(src.shape)
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(ndim))
    dims = [d % ndim for d in ([dims] if isinstance(dims, int) else dims)]
    if any(ids.shape[d] > 1 for d in dims):
        return ctx.unknown(node)
    if node.name in ("softmax", "log_softmax", "cumsum", "cumprod", "normalize"):
        return passthrough(ctx, node)
    positional = node.args[2] if len(node.args) > 2 and isinstance(node.args[2], bool) else False
    keepdim = node.kwargs.get("keepdim", positional)
    out = ids
    for d in sorted(dims, reverse=True):
        if not keepdim:
            out = out.squeeze(d)
    for ref in node.output_refs():
        ctx.set(ref, out if out.dim() == len(ref.shape) else out.reshape([1] * len(ref.shape)))


def pooling(ctx: AnalysisContext, node: Node, spatial: int) -> None:
    src = _first_ref(node)
    ids = ctx.get(src)
    if any(ids.shape[d] > 1 for d in range(ids.dim() - spatial, ids.dim())):
        return ctx.unknown(node)
    passthrough(ctx, node)


def matmul(ctx: AnalysisContext, node: Node) -> None:
    """``a @ b``: a's last dim meets b's second-to-last; output takes the side that varies."""
    a_ref, b_ref = node.input_refs()[:2]
    out = node.output_refs()[0]
    if len(a_ref.shape) < 2 or len(b_ref.shape) < 2:
        return ctx.unknown(node)
    ids = _matmul_ids(ctx, ctx.full(a_ref), ctx.full(b_ref))
    ctx.set(out, ids.reshape((1,) * (len(out.shape) - ids.dim()) + tuple(ids.shape)))


def _matmul_ids(ctx: AnalysisContext, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Ids of ``a @ b`` from the full id tensors ``[..., n, k]`` and ``[..., k, m]``."""
    a_const_rows = bool((a == a[..., :1, :]).all())  # a's ids do not change along n
    b_const_cols = bool((b == b[..., :, :1]).all())  # b's ids do not change along m
    a_k, b_k = a[..., :1, :], b[..., :, :1].transpose(-1, -2)
    along_k = not bool((a == a[..., :, :1]).all() and (b == b[..., :1, :]).all())
    if not along_k:  # summed over a dim that holds no channels (tokens in ``attn @ v``)
        pass
    elif a_const_rows and b_const_cols:
        ctx.space.union(*torch.broadcast_tensors(a_k, b_k))
        if bool(((a_k >= 0) & (b_k < 0)).any() or ((b_k >= 0) & (a_k < 0)).any()):
            ctx.fix(torch.cat([a_k.reshape(-1), b_k.reshape(-1)]), f"contracted with constant data at {ctx.describe()}")
    elif bool((a_k >= 0).any() or (b_k >= 0).any()):
        ctx.fix(a, f"channels contracted by {ctx.describe()}")
        ctx.fix(b, f"channels contracted by {ctx.describe()}")
    a_rows = a[..., :, :1]  # ids along n (constant along k when a_k is)
    b_cols = b[..., :1, :]
    a_has = bool((a_rows >= 0).any()) and bool((a == a_rows).all())
    b_has = bool((b_cols >= 0).any()) and bool((b == b_cols).all())
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if a_has and b_has:
        rows, cols = compress(a_rows), compress(b_cols)
        if along_k or (rows.shape[-2] > 1 and cols.shape[-1] > 1):
            ctx.fix(a, f"two channel dims meet in {ctx.describe()}")
            ctx.fix(b, f"two channel dims meet in {ctx.describe()}")
            return torch.full((*batch, 1, 1), CONST, dtype=torch.long)
        # one side's channels vary only along the batch dims (an attention bias per head):
        # they scale the other side's channels of the same batch entry, so they are one
        rows, cols = torch.broadcast_tensors(rows, cols)
        ctx.space.union(rows, cols)
        out = torch.where(cols >= 0, cols, rows)
        return out.reshape((1,) * (len(batch) + 2 - out.dim()) + tuple(out.shape)).expand(*batch, *out.shape[-2:])
    if b_has:
        return torch.broadcast_to(b_cols, (*batch, 1, b.shape[-1]))
    if a_has:
        return torch.broadcast_to(a_rows, (*batch, a.shape[-2], 1))
    return torch.full((*batch, 1, 1), NONE, dtype=torch.long)


def einsum(ctx: AnalysisContext, node: Node) -> None:
    """Two-operand ``einsum``, rewritten as a batched matmul of the id tensors: letters of both
    operands and the output are batch dims, letters of both operands only are contracted, the
    others are rows or columns; a letter summed away in one operand is a reduction."""
    refs = node.input_refs()
    equation = node.args[0] if isinstance(node.args[0], str) else None
    if equation is None or len(refs) != 2 or "..." in equation or "->" not in equation:
        return ctx.unknown(node)
    lhs, out_letters = equation.replace(" ", "").split("->")
    a_letters, b_letters = lhs.split(",")
    if len(set(a_letters)) != len(a_letters) or len(set(b_letters)) != len(b_letters):
        return ctx.unknown(node)  # a repeated letter takes a diagonal
    a, b = ctx.full(refs[0]), ctx.full(refs[1])
    a, a_letters = _sum_away(ctx, a, a_letters, b_letters + out_letters)
    b, b_letters = _sum_away(ctx, b, b_letters, a_letters + out_letters)
    batch = [c for c in out_letters if c in a_letters and c in b_letters]
    rows = [c for c in out_letters if c in a_letters and c not in b_letters]
    cols = [c for c in out_letters if c in b_letters and c not in a_letters]
    inner = [c for c in a_letters if c in b_letters and c not in out_letters]
    a3 = _grouped(a, a_letters, [batch, rows, inner])
    b3 = _grouped(b, b_letters, [batch, inner, cols])
    ids = _matmul_ids(ctx, a3, b3)  # [*batch, rows, cols], size 1 where the ids do not vary
    sizes = {c: n for letters, t in ((a_letters, a), (b_letters, b)) for c, n in zip(letters, t.shape)}
    shape = [sizes[c] for c in batch] + [sizes[c] if ids.shape[-2] > 1 else 1 for c in rows] + \
        [sizes[c] if ids.shape[-1] > 1 else 1 for c in cols]
    ids = ids.reshape(shape)
    order = [(batch + rows + cols).index(c) for c in out_letters]
    ctx.set(node.output_refs()[0], ids.permute(order))


def _sum_away(ctx: AnalysisContext, ids: torch.Tensor, letters: str, kept: str) -> tuple[torch.Tensor, str]:
    """Drop the dims of letters summed in this operand alone (fixing channels summed there)."""
    for i in reversed(range(len(letters))):
        if letters[i] not in kept:
            if ids.shape[i] > 1 and not bool((ids == ids.narrow(i, 0, 1)).all()):
                ctx.fix(ids, f"channels summed by {ctx.describe()}")
            ids, letters = ids.select(i, 0), letters[:i] + letters[i + 1:]
    return ids, letters


def _grouped(ids: torch.Tensor, letters: str, groups: list[list[str]]) -> torch.Tensor:
    """Permute the dims into ``groups`` order; the first group stays, each other is flattened."""
    ids = ids.permute([letters.index(c) for g in groups for c in g])
    sizes, start = [], 0
    for i, group in enumerate(groups):
        dims = list(ids.shape[start:start + len(group)])
        sizes += dims if i == 0 else [math.prod(dims)]
        start += len(group)
    return ids.reshape(sizes)


def sdpa(ctx: AnalysisContext, node: Node) -> None:
    """``scaled_dot_product_attention``: q and k meet over the head dim, v passes to the output.

    The scale is derived from q's size, so channels that vary within a head of q or k stay
    fixed (pruning them would change it); v's channels are free. When every head is one
    element (whole heads, ``attention='heads'``), the head dim keeps its size: q, k and v of a
    head are pruned together.
    """
    q, k, v = node.input_refs()[:3]
    qi, ki, vi = ctx.get(q), ctx.get(k), ctx.get(v)
    if qi.shape[-1] > 1 or ki.shape[-1] > 1:
        reason = f"the attention scale of {ctx.describe()} depends on the head dim"
        ctx.fix(qi, reason)
        ctx.fix(ki, reason)
    else:
        ctx.space.union(qi, ki)
        ctx.space.union(qi, vi)
    ctx.set(node.output_refs()[0], vi)


# -- layers -------------------------------------------------------------------------------------
def _channel_dim(ref: TensorRef, batched_ndim: int) -> int:
    return 1 if len(ref.shape) == batched_ndim else 0


def conv_like(ctx: AnalysisContext, name: str, x: TensorRef, out: TensorRef, spatial: int,
              in_channels: int, out_channels: int, groups: int) -> None:
    dim = _channel_dim(x, spatial + 2)
    ids_in = ctx.read(x, dim)
    if groups == 1:
        ids_out = ctx.fresh_layer_output(name, out_channels)
    elif groups == in_channels == out_channels:  # depthwise: each channel is its own group
        ids_out = ids_in
    else:  # grouped: the same position in every group is pruned together
        _group_union(ctx, ids_in, groups)
        ids_out = ctx.fresh_layer_output(name, out_channels)
        _group_union(ctx, ids_out, groups)
    ctx.slot(name, False, ids_in)
    ctx.slot(name, True, ids_out)
    ctx.write(out, dim, ids_out)


def _group_union(ctx: AnalysisContext, ids: torch.Tensor, groups: int) -> None:
    blocks = ids.reshape(groups, -1)
    ctx.space.union(blocks[:1].expand_as(blocks), blocks)


def _head_union(ctx: AnalysisContext, ids: torch.Tensor, heads: int) -> None:
    """Channels of ``heads`` equal heads: one element per head, or one per position in a head."""
    if ctx.attention == "head_dims":
        return _group_union(ctx, ids, heads)
    blocks = ids.reshape(heads, -1)
    ctx.space.union(blocks[:, :1].expand_as(blocks), blocks)


def conv_module(ctx: AnalysisContext, node: Node) -> None:
    m = node.target
    conv_like(ctx, node.name, _first_ref(node), node.output_refs()[0], len(m.kernel_size),
              m.in_channels, m.out_channels, m.groups)


def linear_module(ctx: AnalysisContext, node: Node) -> None:
    x, out = _first_ref(node), node.output_refs()[0]
    ids_in = ctx.read(x, -1)
    ids_out = ctx.fresh_layer_output(node.name, node.target.out_features)
    ctx.slot(node.name, False, ids_in)
    ctx.slot(node.name, True, ids_out)
    ctx.write(out, -1, ids_out)


def norm_module(ctx: AnalysisContext, node: Node) -> None:
    """Batch/instance norms: per channel, input and output channels are the same."""
    m = node.target
    x, out = _first_ref(node), node.output_refs()[0]
    spatial = {nn.BatchNorm1d: 1, nn.InstanceNorm1d: 1}.get(type(m), None)
    batched = (spatial or (3 if isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d)) else 2)) + 2
    dim = 1 if len(x.shape) >= 2 and (len(x.shape) == batched or isinstance(m, nn.BatchNorm1d)) else 0
    _coupled(ctx, node.name, x, out, dim)


def _coupled(ctx: AnalysisContext, name: str, x: TensorRef, out: TensorRef, dim: int, groups: int = 1) -> None:
    ids = ctx.read(x, dim)
    if groups > 1:
        _group_union(ctx, ids, groups)
    ctx.slot(name, False, ids)
    ctx.slot(name, True, ids)
    ctx.write(out, dim, ids)


def layer_norm_module(ctx: AnalysisContext, node: Node) -> None:
    m = node.target
    if len(m.normalized_shape) != 1:
        return ctx.unknown(node)
    _coupled(ctx, node.name, _first_ref(node), node.output_refs()[0], -1)


def group_norm_module(ctx: AnalysisContext, node: Node) -> None:
    m = node.target
    _coupled(ctx, node.name, _first_ref(node), node.output_refs()[0], 1, groups=m.num_groups)


def mha_module(ctx: AnalysisContext, node: Node) -> None:
    """``nn.MultiheadAttention``: inputs, q/k/v projections and output share one width (embed_dim).
    Whole heads are kept or pruned (``num_heads`` shrinks, ``head_dim`` stays), or, with
    ``attention='head_dims'``, every head keeps the same positions (``head_dim`` shrinks);
    either way ``embed_dim % num_heads == 0`` by construction."""
    m: nn.MultiheadAttention = node.target
    refs = node.input_refs()[:3]
    out = node.output_refs()[0]
    if not m._qkv_same_embed_dim or m.bias_k is not None:
        return ctx.unknown(node)
    dim = -1 if m.batch_first or len(refs[0].shape) == 2 else 2
    ids = ctx.read(refs[0], dim)
    for ref in refs[1:]:
        ctx.space.union(ids, ctx.read(ref, dim))
    _head_union(ctx, ids, m.num_heads)
    ctx.slot(node.name, False, ids)
    ctx.slot(node.name, True, ids)
    ctx.write(out, dim, ids)
    for extra in node.output_refs()[1:]:
        ctx.set(extra, torch.full([1] * len(extra.shape), NONE, dtype=torch.long))


# -- functional layers that use a module's parameters -----------------------------------------
def _owner(ref: TensorRef | None, ctx: AnalysisContext) -> str | None:
    if ref is None or ref.param is None:
        return None
    owner = ref.param.rpartition(".")[0]
    return owner if owner in ctx.modules else None


def _param_arg(node: Node, index: int, key: str) -> TensorRef | None:
    value = node.args[index] if len(node.args) > index else node.kwargs.get(key)
    return value if isinstance(value, TensorRef) else None


def functional_linear(ctx: AnalysisContext, node: Node) -> None:
    weight = _param_arg(node, 1, "weight")
    owner = _owner(weight, ctx)
    if owner is None or not isinstance(ctx.modules[owner], nn.Linear):
        return ctx.unknown(node)
    x, out = _first_ref(node), node.output_refs()[0]
    ids_in = ctx.read(x, -1)
    ids_out = ctx.fresh_layer_output(owner, weight.shape[0])
    ctx.slot(owner, False, ids_in)
    ctx.slot(owner, True, ids_out)
    ctx.write(out, -1, ids_out)


def functional_conv(ctx: AnalysisContext, node: Node) -> None:
    weight = _param_arg(node, 1, "weight")
    owner = _owner(weight, ctx)
    if owner is None or not isinstance(ctx.modules[owner], nn.modules.conv._ConvNd):
        return ctx.unknown(node)
    m = ctx.modules[owner]
    conv_like(ctx, owner, _first_ref(node), node.output_refs()[0], len(m.kernel_size),
              m.in_channels, m.out_channels, m.groups)


def functional_layer_norm(ctx: AnalysisContext, node: Node) -> None:
    weight = _param_arg(node, 2, "weight")
    owner = _owner(weight, ctx)
    shape = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
    if owner is None or not isinstance(ctx.modules[owner], nn.LayerNorm) or len(shape) != 1:
        return ctx.unknown(node)
    _coupled(ctx, owner, _first_ref(node), node.output_refs()[0], -1)


# -- the table ----------------------------------------------------------------------------------
PASSTHROUGH = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "mish", "softplus", "softsign",
    "logsigmoid", "dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "clone", "contiguous", "detach", "float", "half", "double",
    "bfloat16", "to", "type", "type_as", "abs", "neg", "exp", "log", "sqrt", "rsqrt", "square",
    "sin", "cos", "erf", "reciprocal", "sign", "clamp", "clamp_", "clamp_min", "clamp_max",
    "requires_grad_", "__neg__", "pow", "__pow__", "stochastic_depth", "identity",
}
ELEMENTWISE = {
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "true_divide",
    "floor_divide", "remainder", "maximum", "minimum", "where", "addcmul", "lerp", "masked_fill",
    "masked_fill_", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__",
    "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "eq", "ne",
    "gt", "lt", "ge", "le", "__eq__", "__ne__", "__gt__", "__lt__", "__ge__", "__le__",
    "__and__", "__or__", "logical_and", "logical_or", "copy_",
}
RESHAPES = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as"}
CHUNKS = {"chunk"}
SLICES = {"__getitem__", "narrow", "select", "index_select", "split", "split_with_sizes",
          "tensor_split", "unbind"}
MOVEMENT = RESHAPES | {
    "permute", "transpose", "t", "swapaxes", "movedim", "squeeze", "unsqueeze", "__getitem__",
    "narrow", "select", "index_select", "chunk", "split", "tensor_split", "unbind", "cat",
    "concat", "concatenate", "stack", "expand", "expand_as", "repeat", "roll", "flip", "pad",
    "__setitem__", "channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "split_with_sizes",
}
CREATION = {
    "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint", "zeros_like",
    "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros", "new_ones",
    "new_full", "new_empty", "new_tensor", "tensor", "as_tensor", "linspace", "eye",
    "bernoulli", "bernoulli_", "normal_", "uniform_", "fill_", "zero_", "div_scalar",
}
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "softmax", "log_softmax", "normalize",
              "logsumexp", "prod", "cumsum", "cumprod"}
POOLING = {
    "max_pool1d": 1, "avg_pool1d": 1, "adaptive_avg_pool1d": 1, "adaptive_max_pool1d": 1,
    "max_pool2d": 2, "avg_pool2d": 2, "adaptive_avg_pool2d": 2, "adaptive_max_pool2d": 2,
    "max_pool3d": 3, "avg_pool3d": 3, "adaptive_avg_pool3d": 3, "adaptive_max_pool3d": 3,
    "interpolate": 0, "upsample": 0, "max_pool2d_with_indices": 2,
}
FUNCTIONAL_LAYERS: dict[str, Rule] = {
    "linear": functional_linear, "conv1d": functional_conv, "conv2d": functional_conv,
    "conv3d": functional_conv, "layer_norm": functional_layer_norm,
    "matmul": matmul, "__matmul__": matmul, "bmm": matmul, "mm": matmul, "einsum": einsum,
    "scaled_dot_product_attention": sdpa,
}
MODULE_RULES: dict[type, Rule] = {
    nn.Conv1d: conv_module, nn.Conv2d: conv_module, nn.Conv3d: conv_module,
    nn.Linear: linear_module,
    nn.BatchNorm1d: norm_module, nn.BatchNorm2d: norm_module, nn.BatchNorm3d: norm_module,
    nn.InstanceNorm1d: norm_module, nn.InstanceNorm2d: norm_module, nn.InstanceNorm3d: norm_module,
    nn.LayerNorm: layer_norm_module, nn.GroupNorm: group_norm_module,
    nn.MultiheadAttention: mha_module,
}


def module_rule(module: nn.Module) -> Rule | None:
    """The rule of a layer type, also for subclasses that keep the base class's forward."""
    for base in type(module).__mro__:
        if base in MODULE_RULES:
            return MODULE_RULES[base] if type(module).forward is base.forward else None
    return None


class RuleTable:
    """Dispatch a recorded node to its rule."""

    def is_leaf(self, module: nn.Module) -> bool:
        return module_rule(module) is not None

    def apply(self, ctx: AnalysisContext, node: Node) -> None:
        if node.kind == "module":
            return module_rule(node.target)(ctx, node)
        self._apply_function(ctx, node)
        ctx.carry_const_reasons(node)

    def _apply_function(self, ctx: AnalysisContext, node: Node) -> None:
        name = node.name
        if not node.input_refs():
            return creation(ctx, node)
        if name in FUNCTIONAL_LAYERS:
            return FUNCTIONAL_LAYERS[name](ctx, node)
        if name in PASSTHROUGH:
            return passthrough(ctx, node)
        if name in ELEMENTWISE:
            return elementwise(ctx, node)
        if name in MOVEMENT:
            return movement(ctx, node)
        if name in CREATION:
            return creation(ctx, node)
        if name in REDUCTIONS:
            return reduction(ctx, node)
        if name in POOLING:
            return pooling(ctx, node, POOLING[name] or len(_first_ref(node).shape) - 2)
        return ctx.unknown(node)


RULES = RuleTable()
