"""Products: ``matmul``/``@``/``bmm``, two-operand ``einsum`` and
``scaled_dot_product_attention``. Channels contracted on both sides are one; the output takes
the channels of the side that carries them; per-head channels of the batch dims meet.
"""
from __future__ import annotations

import math

import torch

from ..channels.channel_space import CONST, NONE, compress
from ..channels.context import AnalysisContext
from ..trace.graph import Node, TensorRef


def matmul(ctx: AnalysisContext, node: Node) -> None:
    """``a @ b``: a's last dim meets b's second-to-last; output takes the side that varies."""
    a_ref, b_ref = node.input_refs()[:2]
    out = node.output_refs()[0]
    if len(a_ref.shape) < 2 or len(b_ref.shape) < 2:
        return ctx.unknown(node)
    ids = _matmul_ids(ctx, _compressed(ctx, a_ref), _compressed(ctx, b_ref))
    ctx.set(out, ids.reshape((1,) * (len(out.shape) - ids.dim()) + tuple(ids.shape)))


def _compressed(ctx: AnalysisContext, ref: TensorRef) -> torch.Tensor:
    """The ids of ``ref`` with one dim per dim of the tensor, each of size 1 where they do not vary."""
    ids = compress(ctx.get(ref))
    return ids.reshape((1,) * (len(ref.shape) - ids.dim()) + tuple(ids.shape))


def _matmul_ids(ctx: AnalysisContext, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Ids of ``a @ b`` from the compressed id tensors of ``[..., n, k]`` and ``[..., k, m]`` (a dim
    of size 1 where the ids do not vary: every test below reads the same values as on the full
    tensors, and the unions and fixes get the same sets of elements). The result is compressed
    the same way: broadcastable to ``[..., n, m]``, of size 1 where it does not vary."""
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
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])  # 1 where no operand varies
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
        ctx.head_elements += [rows, cols]  # channels per batch entry of a product: heads
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
    a, b = _compressed(ctx, refs[0]), _compressed(ctx, refs[1])
    a, a_letters = _sum_away(ctx, a, a_letters, b_letters + out_letters)
    b, b_letters = _sum_away(ctx, b, b_letters, a_letters + out_letters)
    batch = [c for c in out_letters if c in a_letters and c in b_letters]
    rows = [c for c in out_letters if c in a_letters and c not in b_letters]
    cols = [c for c in out_letters if c in b_letters and c not in a_letters]
    inner = [c for c in a_letters if c in b_letters and c not in out_letters]
    a, b = _align_inner(a, a_letters, b, b_letters, inner)
    a3 = _grouped(a, a_letters, [batch, rows, inner])
    b3 = _grouped(b, b_letters, [batch, inner, cols])
    ids = _matmul_ids(ctx, a3, b3)  # [*batch, rows, cols], size 1 where the ids do not vary
    sizes = {c: n for letters, t in ((a_letters, a), (b_letters, b)) for c, n in zip(letters, t.shape)}
    shape = list(ids.shape[:len(batch)]) + [sizes[c] if ids.shape[-2] > 1 else 1 for c in rows] + \
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


def _align_inner(a: torch.Tensor, a_letters: str, b: torch.Tensor, b_letters: str,
                 inner: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Give each contracted letter the same size in both compressed operands (the full size
    where either varies along it), so that both flatten the contracted dims alike."""
    a_shape, b_shape = list(a.shape), list(b.shape)
    for c in inner:
        i, j = a_letters.index(c), b_letters.index(c)
        a_shape[i] = b_shape[j] = max(a_shape[i], b_shape[j])
    return a.expand(a_shape), b.expand(b_shape)


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

    Without ``scale=``, the scale is derived from q's size, so channels that vary within a
    head of q or k stay fixed (pruning them would change it); v's channels are free. An
    explicit ``scale`` (HF passes ``scaling``) is a number that pruning does not change: the
    positions of q and k in a head are then contracted together like a matmul's. When every
    head is one element (whole heads, ``attention='heads'``), the head dim keeps its size: q,
    k and v of a head are pruned together. With grouped KV heads (``enable_gqa=True``) each
    KV head serves a group of query heads (see ``_gqa_repeat``).
    """
    q, k, v = node.input_refs()[:3]
    qi, ki, vi = ctx.get(q), _gqa_repeat(ctx, node, k), _gqa_repeat(ctx, node, v)
    if qi.shape[-1] > 1 or ki.shape[-1] > 1:
        if _explicit_scale(node):
            _contract_head_dim(ctx, qi, ki)
        else:
            reason = f"the attention scale of {ctx.describe()} depends on the head dim"
            ctx.fix(qi, reason)
            ctx.fix(ki, reason)
    else:
        ctx.space.union(*torch.broadcast_tensors(qi, ki))
        ctx.space.union(*torch.broadcast_tensors(qi, vi))
    _mask_follows_heads(ctx, node, qi)
    ctx.head_elements += [qi, ki, vi]
    ctx.set(node.output_refs()[0], vi)


def _mask_follows_heads(ctx: AnalysisContext, node: Node, qi: torch.Tensor) -> None:
    """An ``attn_mask`` with channels (a relative-position bias, one slice per head) is pruned
    with the heads: each entry is one with the head of q it is added to (broadcast right-aligned
    against the scores ``[*q.shape[:-2], L, S]``). Channels that cannot follow the heads (a mask
    shared by several heads, or heads that are not whole elements) stay fixed."""
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if not isinstance(mask, TensorRef):
        return
    mi = ctx.get(mask)
    if not bool((mi >= 0).any()):  # a causal or padding mask: no channels
        if len(mask.shape) >= 3 and mask.shape[-3] > 1 and qi.dim() >= 3 and qi.shape[-3] > 1:
            ctx.fix(qi, f"a per-head attention mask of constant data in {ctx.describe()}")  # ALiBi-like
        return
    heads = qi if qi.shape[-1] == 1 and qi.dim() >= 2 and qi.shape[-2] == 1 else None
    if heads is not None:
        ndim = max(mi.dim(), heads.dim())
        m = mi.reshape((1,) * (ndim - mi.dim()) + tuple(mi.shape))
        h = heads.reshape((1,) * (ndim - heads.dim()) + tuple(heads.shape))
        shared = any(h.shape[d] > 1 and m.shape[d] == 1 for d in range(ndim))
        m, h = torch.broadcast_tensors(m, h)
        if not shared and not bool(((m >= 0) & (h < 0)).any()):
            ctx.space.union(m, h)
            return
    ctx.fix(mi, f"the attention mask of {ctx.describe()} cannot follow its heads")


def _explicit_scale(node: Node) -> bool:
    """Whether the call gives ``scale=`` as a number (not derived from the head dim here)."""
    scale = node.kwargs.get("scale", node.args[6] if len(node.args) > 6 else None)
    return isinstance(scale, (int, float)) and not isinstance(scale, bool)


def _contract_head_dim(ctx: AnalysisContext, qi: torch.Tensor, ki: torch.Tensor) -> None:
    """q and k summed over the head dim: position by position, their channels are one (fixed
    where one side has channels and the other has none)."""
    a, b = torch.broadcast_tensors(qi, ki)
    ctx.space.union(a, b)
    if bool(((a >= 0) != (b >= 0)).any()):
        ctx.fix(torch.cat([a.reshape(-1), b.reshape(-1)]), f"contracted with constant data at {ctx.describe()}")


def _gqa_repeat(ctx: AnalysisContext, node: Node, ref: TensorRef) -> torch.Tensor:
    """Ids of k or v as the query heads see them. With ``enable_gqa=True`` and fewer KV heads
    than query heads, query head ``h`` reads KV head ``h // group``: the KV ids are repeated
    (interleaved) along the heads dim, so a KV head and its whole group of query heads become
    one element in the whole-heads mode: pruning a KV head prunes its group."""
    ids = ctx.get(ref)
    q = node.input_refs()[0]
    gqa = node.kwargs.get("enable_gqa", node.args[7] if len(node.args) > 7 else False)
    if not gqa or len(ref.shape) < 3 or ref.shape[-3] == q.shape[-3]:
        return ids
    heads, kv_heads = q.shape[-3], ref.shape[-3]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} KV heads evenly")
    if ids.shape[-3] == 1:
        return ids
    return ids.repeat_interleave(heads // kv_heads, dim=-3)


ADD_PRODUCTS = {"baddbmm": ("batch1", "batch2"), "addbmm": ("batch1", "batch2"), "addmm": ("mat1", "mat2")}


def add_product_operands(node: Node) -> tuple[TensorRef, TensorRef, TensorRef] | None:
    """``(input, b1, b2)`` of ``beta * input + alpha * (b1 @ b2)`` (positional or by keyword)."""
    keys = ("input", *ADD_PRODUCTS.get(node.name, ("", "")))
    refs = [node.args[i] if len(node.args) > i else node.kwargs.get(key) for i, key in enumerate(keys)]
    return tuple(refs) if all(isinstance(r, TensorRef) for r in refs) else None


def add_product(ctx: AnalysisContext, node: Node) -> None:
    """``baddbmm``/``addbmm``/``addmm``: the channels of ``b1 @ b2`` follow the matmul rule, and
    ``input`` joins them as ``input + product`` would (broadcast right-aligned). An input of
    constant data that differs along the product's channels (ALiBi's per-head slopes, batch and
    heads merged in dim 0) cannot follow pruned channels: the op then has no rule (warned)."""
    operands = add_product_operands(node)
    out = node.output_refs()[0]
    if operands is None or len(operands[1].shape) < 2 or len(operands[2].shape) < 2:
        return ctx.unknown(node)
    bias, b1, b2 = operands
    ids = _matmul_ids(ctx, _compressed(ctx, b1), _compressed(ctx, b2))
    if node.name == "addbmm":  # the batch of products is summed
        if ids.shape[0] > 1 and not bool((ids == ids[:1]).all()):
            return ctx.unknown(node, "channels on the batch dim it sums")
        ids = ids[0]
    product = compress(ids.reshape((1,) * (len(out.shape) - ids.dim()) + tuple(ids.shape)))
    given = ctx.get(bias)
    given = given.reshape((1,) * (len(out.shape) - given.dim()) + tuple(given.shape))
    shape = (1,) * (len(out.shape) - len(bias.shape)) + tuple(bias.shape)
    channel_dims = [d for d in range(len(out.shape)) if product.shape[d] > 1 or given.shape[d] > 1]
    if not bool((given >= 0).any()):
        if any(shape[d] > 1 for d in channel_dims if product.shape[d] > 1):
            return ctx.unknown(node, "its input of constant data differs along the product's channels "
                                     "(a per-head bias such as ALiBi) and cannot follow pruned ones")
        ctx.set(out, product)
        return None
    if any(given.shape[d] == 1 and product.shape[d] > 1 for d in range(len(out.shape))) or \
            any(product.shape[d] == 1 and given.shape[d] > 1 and bool((product >= 0).any()) for d in channel_dims):
        ctx.fix(torch.cat([given.reshape(-1), product.reshape(-1)]), f"broadcast across channels in {ctx.describe()}")
    a, b = torch.broadcast_tensors(given, product)
    both = (a >= 0) & (b >= 0)
    ctx.space.union(a[both], b[both])
    mixed = (a >= 0) != (b >= 0)
    if bool(mixed.any()):
        ctx.fix(torch.cat([a[mixed & (a >= 0)], b[mixed & (b >= 0)]]), f"mixed with constant data at {ctx.describe()}")
    ctx.set(out, torch.where(a >= 0, a, b))
