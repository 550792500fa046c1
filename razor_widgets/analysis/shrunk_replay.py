"""Reshapes and joins (``cat``, ``stack``) replayed on compressed ids, so that dims along which
no input's ids vary (tokens, space, batch) stay of size 1 instead of being materialised.

The movement rules replay an op on broadcast views of the ids (``rules_movement.py``). Most ops
keep those views cheap, but a reshape that merges a broadcast dim with a permuted one, or a
``cat`` of views, writes a dense tensor of the data's size. Both act on groups of dims that are
known from the shapes alone, so they can run on the ids where they vary and broadcast the rest:
the result is a broadcast view of the output's shape with the same values as the full replay.
"""
from __future__ import annotations

import torch

from ..trace.graph import Node, TensorRef

GROUPED = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as"}
JOINS = {"cat", "concat", "concatenate", "stack"}


def shrunk_replay(ids_of, node: Node) -> torch.Tensor | None:
    """The output ids of a reshape or join as a broadcast view of the output's shape, computed on
    compressed ids (``ids_of(ref)``); None for any other op or form (the caller replays it)."""
    if len(node.output_refs()) != 1:
        return None
    try:
        if node.name in GROUPED:
            return _reshaped(ids_of, node)
        if node.name in JOINS:
            return _joined(ids_of, node)
    except Exception:  # noqa: BLE001 (an unexpected form: the full replay decides)
        return None
    return None


def _full_ndim(ids: torch.Tensor, ref: TensorRef) -> torch.Tensor:
    return ids.reshape((1,) * (len(ref.shape) - ids.dim()) + tuple(ids.shape))


def _reshaped(ids_of, node: Node) -> torch.Tensor | None:
    """A reshape maps runs of input dims to runs of output dims with the same product; a run
    whose input ids do not vary stays size 1 in the output."""
    src, out = node.input_refs()[0], node.output_refs()[0]
    groups = dim_groups(tuple(src.shape), tuple(out.shape))
    if groups is None:
        return None
    ids = _full_ndim(ids_of(src), src)
    in_shape, out_shape = list(ids.shape), []
    for (i0, i1), (o0, o1) in groups:
        if any(ids.shape[d] > 1 for d in range(i0, i1)):
            in_shape[i0:i1] = src.shape[i0:i1]
            out_shape += list(out.shape[o0:o1])
        else:
            out_shape += [1] * (o1 - o0)
    return ids.expand(in_shape).reshape(out_shape).expand(out.shape)


def dim_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """The shortest runs ``(a[i0:i1], b[o0:o1])`` of equal products that cover both shapes in
    order (how a reshape regroups dims); None for empty tensors."""
    if 0 in a or 0 in b:
        return None
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        i0, j0, pa, pb = i, j, 1, 1
        if i < len(a):
            pa, i = a[i], i + 1
        if j < len(b):
            pb, j = b[j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa, i = pa * a[i], i + 1
            elif pb < pa and j < len(b):
                pb, j = pb * b[j], j + 1
            else:
                return None
        groups.append(((i0, i), (j0, j)))
    return groups


def _joined(ids_of, node: Node) -> torch.Tensor | None:
    """``cat`` keeps every dim but the joined one, ``stack`` adds one: dims along which no input
    varies stay size 1."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int):
        return None
    if not all(isinstance(t, TensorRef) and t.is_float for t in tensors):
        return None
    if node.name != "stack":  # ``cat`` skips 1-D empty tensors (an empty cache, say)
        tensors = [t for t in tensors if tuple(t.shape) != (0,)] or tensors
    ndim = len(tensors[0].shape)
    if ndim == 0 or any(len(t.shape) != ndim for t in tensors):
        return None
    out = node.output_refs()[0]
    ids = [_full_ndim(ids_of(t), t) for t in tensors]
    shape = [max(i.shape[k] for i in ids) for k in range(ndim)]
    if node.name == "stack":
        joined = torch.stack([i.expand(shape) for i in ids], dim % (ndim + 1))
    else:
        d = dim % ndim
        first = ids[0].expand(shape)
        if all(i.shape[d] == 1 and torch.equal(i.expand(shape), first) for i in ids):
            return first.expand(out.shape)  # the same ids on both sides: the joined dim holds no channels
        joined = torch.cat([i.expand([t.shape[d] if k == d else s for k, s in enumerate(shape)])
                            for i, t in zip(ids, tensors)], d)
    return joined.expand(out.shape)
