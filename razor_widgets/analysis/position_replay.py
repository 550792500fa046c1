"""Ops that move or pick positions (``roll``, ``flip``, constant ``pad``, ``index_select``,
indexing with index tensors, ``__setitem__``) replayed on compressed ids.

Replayed on broadcast views (``rules_movement.py``) these ops write a dense id tensor of the
data's size. Along a dim where the ids do not vary (tokens, space, batch) they change nothing
but the dim's length, so they run on the compressed ids where the ids vary and leave the rest
of size 1: the result is a broadcast view of the output's shape with the same values as the
full replay. Any other form returns None and the caller replays it as before.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..channels.channel_space import CONST
from ..trace.graph import Node, TensorRef

POSITIONAL = {"roll", "flip", "pad", "index_select", "__getitem__", "__setitem__"}


def position_replay(ctx: Any, node: Node) -> torch.Tensor | None:
    """The output ids of a positional op (for ``__setitem__``: the written tensor's new ids) as a
    broadcast view of its shape, computed on compressed ids; None where the caller must replay."""
    refs = node.output_refs()
    src = node.input_refs()[0]
    if node.name != "__setitem__" and len(refs) != 1:
        return None
    if 0 in src.shape:
        return None
    try:
        ids = ctx.get(src)
        if ids.dim() != len(src.shape):
            return None
        out = _REPLAYS[node.name](ctx, node, ids, src)
    except Exception:  # noqa: BLE001 (an unexpected form: the full replay decides)
        return None
    if out is None:
        return None
    return out.expand(src.shape if node.name == "__setitem__" else refs[0].shape)


def _arg(node: Node, i: int, name: str, default: Any = None) -> Any:
    return node.kwargs.get(name, node.args[i] if len(node.args) > i else default)


def _as_list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple, torch.Size)) else [x]


def _roll(ctx: Any, node: Node, ids: torch.Tensor, src: TensorRef) -> torch.Tensor | None:
    """Rolling a dim the ids do not vary along leaves them as they are."""
    shifts, dims = _as_list(_arg(node, 1, "shifts")), _arg(node, 2, "dims")
    if dims is None or _as_list(dims) == []:  # a roll of the flattened tensor
        return ids if ids.numel() == 1 else None
    dims = [int(d) % ids.dim() for d in _as_list(dims)]
    if len(shifts) != len(dims):
        return None
    kept = [(int(s), d) for s, d in zip(shifts, dims) if ids.shape[d] > 1]
    return torch.roll(ids, [s for s, _ in kept], [d for _, d in kept]) if kept else ids


def _flip(ctx: Any, node: Node, ids: torch.Tensor, src: TensorRef) -> torch.Tensor | None:
    dims = node.kwargs.get("dims", node.args[1:])
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = dims[0]
    kept = [int(d) % ids.dim() for d in dims if ids.shape[int(d) % ids.dim()] > 1]
    return torch.flip(ids, kept) if kept else ids


def _pad(ctx: Any, node: Node, ids: torch.Tensor, src: TensorRef) -> torch.Tensor | None:
    """Constant padding: new positions of a dim with channels hold ``CONST``; a dim the ids do
    not vary along gains positions, not channels (its ids stay, as ``_pad_positions_keep_channels``)."""
    if _arg(node, 2, "mode", "constant") != "constant":
        return None
    pads = [int(p) for p in _arg(node, 1, "pad", ())]
    if len(pads) % 2 or len(pads) // 2 > ids.dim():
        return None
    kept = []
    for i in range(len(pads) // 2):
        dim, lo, hi = ids.dim() - 1 - i, pads[2 * i], pads[2 * i + 1]
        if ids.shape[dim] > 1:
            kept += [lo, hi]
        elif src.shape[dim] + min(lo, 0) + min(hi, 0) <= 0:  # no position of the input is left
            return None
        else:
            kept += [0, 0]
    return F.pad(ids, kept, value=CONST)


def _index_values(ctx: Any, ref: TensorRef) -> torch.Tensor | None:
    value = ctx.graph.values[ref.handle]
    return None if value.is_meta else value


def _index_select(ctx: Any, node: Node, ids: torch.Tensor, src: TensorRef) -> torch.Tensor | None:
    if src.param is not None:  # a lookup table (``_table_rows``): replayed as before
        return None
    dim, index = int(_arg(node, 1, "dim")) % ids.dim(), _arg(node, 2, "index")
    if not isinstance(index, TensorRef) or index.is_float:
        return None
    if ids.shape[dim] == 1:
        return ids
    values = _index_values(ctx, index)
    return None if values is None else ids.index_select(dim, values)


def _entries(ctx: Any, index: Any, ndim: int) -> list[tuple[Any, int | None]] | None:
    """Each entry of an index with the input dim it reads (None for ``None``); index tensors as
    their values. None for forms left to the full replay (masks, tensors without values)."""
    index = index if isinstance(index, tuple) else (index,)
    consuming = sum(1 for e in index if e is not None and e is not Ellipsis)
    out, dim = [], 0
    for e in index:
        if e is Ellipsis:
            dim += ndim - consuming
            continue
        if isinstance(e, TensorRef):
            if e.is_float or ctx.graph.values[e.handle].dtype == torch.bool:
                return None
            e = _index_values(ctx, e)
            if e is None:
                return None
        elif isinstance(e, bool) or not (e is None or isinstance(e, (int, slice))):
            return None
        out.append((e, None if e is None else dim))
        dim += e is not None
    return out if dim <= ndim else None


def _getitem(ctx: Any, node: Node, ids: torch.Tensor, src: TensorRef) -> torch.Tensor | None:
    """Indexing with index tensors: along a dim the ids do not vary, any position gives the same
    ids, so the entry reads position 0 (an index tensor becomes one of size-1 dims)."""
    if src.param is not None or len(node.args) < 2:
        return None
    raw = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if not any(isinstance(e, TensorRef) for e in raw):
        return None  # views of the broadcast ids: nothing is written
    entries = _entries(ctx, node.args[1], ids.dim())
    if entries is None:
        return None
    index = []
    for e, dim in entries:
        if dim is not None and ids.shape[dim] == 1:
            e = torch.zeros([1] * e.dim(), dtype=torch.long) if isinstance(e, torch.Tensor) else \
                (0 if isinstance(e, int) else slice(None))
        index.append(e)
    return ids[tuple(index)]


def _setitem(ctx: Any, node: Node, ids: torch.Tensor, src: TensorRef) -> torch.Tensor | None:
    """``x[index] = value``: only the dims the index restricts or the value varies along are
    materialised; a dim read whole, along which neither varies, stays of size 1."""
    if len(node.args) < 3:
        return None
    value = node.args[2]
    if isinstance(value, TensorRef):
        if not value.is_float:
            return None  # replayed as before
        value_ids = ctx.get(value)
    elif isinstance(value, (int, float, bool)):
        value_ids = torch.tensor(CONST)
    else:
        return None
    entries = _entries(ctx, node.args[1], ids.dim())
    if entries is None:
        return None
    shape = list(ids.shape)
    for e, dim in entries:
        if dim is not None and not (isinstance(e, slice) and e == slice(None)):
            shape[dim] = src.shape[dim]
    if all(isinstance(e, slice) for e, _ in entries):  # the region keeps the dims: the value's vary too
        for k in range(1, min(value_ids.dim(), ids.dim()) + 1):
            if value_ids.shape[-k] > 1:
                shape[-k] = src.shape[-k]
    written = ids.expand(shape).clone()
    written[tuple(e for e, _ in entries)] = value_ids
    return written


_REPLAYS = {"roll": _roll, "flip": _flip, "pad": _pad, "index_select": _index_select,
            "__getitem__": _getitem, "__setitem__": _setitem}
