"""Movement rules: ops that move data without mixing it (view, reshape, permute, cat, pad,
indexing...) are replayed on the id tensors themselves, so every shape and index argument is
handled exactly. Reshapes also keep sizes consistent with pruning: sizes computed from a
shape follow it, a module attribute that sizes a dim is updated by the export (heads), and a
size written as a plain number keeps its channels fixed.
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten, tree_map

from ..channels.channel_space import CONST, compress, varying_dims
from ..channels.context import AnalysisContext
from ..channels.op_names import CREATION
from ..layers.experts import expert_slice
from ..trace.graph import Node, TensorRef
from ..trace.traced_size import AttrRef, TracedSize, attribute_sources, bare_attribute, shape_sources
from .position_replay import POSITIONAL, position_replay
from .shrunk_replay import GROUPED, JOINS, shrunk_replay
from .slot_cuts import record_cuts
from .split_sizes import check_split_sizes

RESHAPES = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as"}
CHUNKS = {"chunk"}
TRANSPOSES = {"T", "mT", "t", "transpose", "swapaxes", "permute"}  # of a 2-D tensor: its dims swapped
SLICES = {"__getitem__", "narrow", "select", "index_select", "split", "split_with_sizes",
          "tensor_split", "unbind"}


def first_input(node: Node) -> TensorRef:
    """The first tensor an op reads."""
    return node.input_refs()[0]


FILLS = {"zeros", "ones", "full", "empty", "new_zeros", "new_ones", "new_full", "new_empty"}


def creation(ctx: AnalysisContext, node: Node) -> None:
    """A tensor made in the forward (``zeros``, ``arange``...) is constant data, unless a fill is
    sized by one channel dim read from a shape (it then carries that dim's channels)."""
    for ref in node.output_refs():
        ctx.set(ref, torch.full([1] * len(ref.shape), CONST, dtype=torch.long))
    if len(node.output_refs()) != 1:
        return
    sizes = _fill_sizes(node) if node.name in FILLS else None
    if sizes is not None and len(sizes) == len(node.output_refs()[0].shape):
        shape_sized = _shape_sized_dims(ctx, node, sizes)
        attribute_sized = _attribute_sized_fill(ctx, node, sizes, link=len(shape_sized) == 0)
        if len(shape_sized) == 1 and not attribute_sized:
            (dim, line), = shape_sized.items()
            ctx.write(node.output_refs()[0], dim, line)
        elif shape_sized:
            _fix_read_sizes(ctx, node, [sizes[d] for d in shape_sized], "sizes several dims of a new tensor")
        return
    if node.name in CREATION:  # arange(c), randn(c), eye(c): not one value per position
        _fix_read_sizes(ctx, node, [s for s in tree_flatten((node.args, node.kwargs))[0] if isinstance(s, TracedSize)],
                        "sizes a new tensor whose values depend on it")


def _fill_sizes(node: Node) -> list | None:
    """The size arguments of a fill (``zeros(n, c)``, ``x.new_full((n, c), v)``), or None."""
    sizes = node.args[1:] if node.name.startswith("new_") else node.args
    sizes = node.kwargs.get("size", sizes)
    if len(sizes) >= 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
        sizes = sizes[0]
    if node.name in ("full", "new_full") and len(sizes) == 2 and isinstance(sizes[0], (tuple, list)):
        sizes = sizes[0]
    return list(sizes) if all(isinstance(s, int) for s in sizes) else None


def _shape_sized_dims(ctx: AnalysisContext, node: Node, sizes: list) -> dict[int, torch.Tensor]:
    """``torch.zeros((n, 3, maps.shape[1]))``: a fill's dims sized by a channel dim read from a
    tensor's shape, with the elements of that channel dim. A fill holds one value per position,
    so its dim follows those channels (the export, sized by the pruned tensor, keeps as many);
    a size computed from a channel count (``2 * c``, ``c // heads``) is fixed instead, since
    the analysis cannot follow it."""
    dims = {}
    for dim, size in enumerate(sizes):
        channel_sources = [(ref, d) for ref, d in shape_sources(getattr(size, "sources", ()))
                           if ctx.get(ref).shape[d] > 1]
        if not channel_sources:
            continue
        ref, source_dim = channel_sources[0]
        if len(size.sources) == 1 and int(size) == ref.shape[source_dim] == node.output_refs()[0].shape[dim]:
            dims[dim] = ctx.read(ref, source_dim)
        else:
            _fix_read_sizes(ctx, node, [size], "sizes a new tensor through arithmetic the analysis cannot follow")
    return dims


def _fix_read_sizes(ctx: AnalysisContext, node: Node, sizes: list, why: str) -> None:
    """Fix the channels whose counts, read from a shape, build a new tensor in a way no rule follows."""
    for size in sizes:
        if shape_sources(size.sources):
            ctx.fix_size_sources(tuple(shape_sources(size.sources)),
                                 f"its channel count {why} ({ctx.describe()})")


def _attribute_sized_fill(ctx: AnalysisContext, node: Node, sizes: list, link: bool = True) -> bool:
    """``torch.zeros((1, self.n_heads, q, k))``: one value everywhere, along a dim sized by a
    module attribute. That dim holds one channel per position (fresh elements, pruned with
    whatever they meet, a per-head bias say), and the export sets the attribute to the kept count.
    Returns whether the fill has such a dim; with ``link`` False it is only reported."""
    out = node.output_refs()[0]
    attrs = [(i, bare_attribute(s)) for i, s in enumerate(sizes) if bare_attribute(s) is not None]
    if len(attrs) != 1 or out.shape[attrs[0][0]] < 2:
        return False
    if link:
        dim, attr = attrs[0]
        ids = ctx.space.fresh(out.shape[dim])
        ctx.count_with_attribute(attr, ids)
        ctx.write(out, dim, ids)
    return True


class _NoIndexValues(Exception):
    """An index tensor on the meta device: its values are unknown."""


def _swap_refs(ctx: AnalysisContext, tree, rows_joined: bool = False, views: bool = True):
    """Float tensors become their id tensors; integer and bool tensors (indices) keep values.

    Id tensors are broadcast views of the compressed ids (``views``): dims without channels
    (tokens, space, batch) are never materialised unless the op needs a dense tensor.

    On the meta device indices have no values: where the rows they pick were joined as one
    (a table lookup, ``_table_rows``) any index gives the same ids, so zeros stand in;
    elsewhere the op cannot be replayed (``_NoIndexValues``)."""

    def swap(x):
        if not isinstance(x, TensorRef):
            return x
        if x.is_float:
            return ctx.get(x).expand(x.shape) if views else ctx.full(x)
        value = ctx.graph.values[x.handle]
        if value.is_meta:
            if not rows_joined:
                raise _NoIndexValues
            return torch.zeros(value.shape, dtype=value.dtype)
        return value

    return tree_map(swap, tree)


def _pads_only_uniform_dims(ctx: AnalysisContext, node: Node) -> bool:
    """A pad that is not constant (``mode='reflect'`` ...) of dims along which the ids do not vary."""
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    pad = node.kwargs.get("pad", node.args[1] if len(node.args) > 1 else ())
    ids = ctx.get(first_input(node))
    return mode != "constant" and all(ids.shape[-1 - d] == 1 for d in range(len(pad) // 2))


def movement(ctx: AnalysisContext, node: Node) -> None:
    """Replay the op on the id tensors: exact for every shape and index argument."""
    if not first_input(node).is_float:  # index arithmetic, not data: no channels
        return creation(ctx, node)
    if any(0 in r.shape and varying_dims(ctx.get(r)) for r in node.input_refs() if r.is_float):
        return ctx.unknown(node, detail="it moves an empty tensor (a dim of size 0, no boxes say), "
                                        "whose channels a replay on no elements cannot follow")
    if node.name == "pad" and _pads_only_uniform_dims(ctx, node):  # reflect/replicate/circular:
        ctx.set(node.output_refs()[0], ctx.get(first_input(node)))  # positions move, channels stay
        return None
    if node.name in ("__getitem__", "transpose", "swapaxes") and expert_slice(ctx, node):
        return None
    args: tuple = ()  # reshapes and joins first run on compressed ids (``shrunk_replay.py``)
    out = shrunk_replay(ctx.get, node) if node.name in GROUPED | JOINS else None
    if node.name in POSITIONAL:  # roll, pad, indexing... on compressed ids (``position_replay.py``)
        out = position_replay(ctx, node)
        args = (out if node.name == "__setitem__" else ctx.get(first_input(node)).expand(first_input(node).shape),)
    try:
        if out is None:
            out, args = _replay(ctx, node, views=node.name != "__setitem__")
    except _NoIndexValues:  # indices without values (meta device): no rule can place the ids
        return ctx.unknown(node)
    except Exception:  # noqa: BLE001 (the op needs dense tensors: replay on dense ids)
        try:
            out, args = _replay(ctx, node, views=False)
        except Exception:  # the op does not accept int64 tensors: no rule after all
            return ctx.unknown(node)
    if node.name == "pad":
        out = _pad_positions_keep_channels(ctx.get(first_input(node)), out, node)
    if node.name == "__setitem__":
        ctx.set(node.args[0], args[0])
        return
    out_leaves, _ = tree_flatten(out)
    refs = node.output_refs()
    if node.name in TRANSPOSES and first_input(node).param is not None and len(first_input(node).shape) == 2:
        ctx.transposed_params[refs[0].handle] = first_input(node).param  # read as ``x @ w.T`` by a layer
    out_ids = [x for x in out_leaves if isinstance(x, torch.Tensor)]
    if node.name in CHUNKS and len(out_ids) > 1:
        if all(o.shape == out_ids[0].shape for o in out_ids):
            for other in out_ids[1:]:  # equal parts of the new size: same positions in each
                ctx.space.union(out_ids[0], other)
        else:
            ctx.fix(args[0], f"uneven chunks in {ctx.describe()}")
    elif node.name in SLICES:
        ctx.check_slices(args[0], out_ids, f"channels selected by fixed indices in {ctx.describe()}")
        record_cuts(ctx, args[0], out_ids)
        if node.name in ("split", "split_with_sizes"):
            check_split_sizes(ctx, node, args[0], out_ids)
    for ref, ids in zip(refs, out_ids):
        ids = compress(ids)
        if node.name in RESHAPES:
            _keep_computed_sizes(ctx, node, out_ids[0])
            ids = _resized_channels(ctx, ids, _target_shape(node, ids.dim()))
        ctx.set(ref, ids)


def _replay(ctx: AnalysisContext, node: Node, views: bool) -> tuple:
    """Run the op on the id tensors: (its output, the arguments it got)."""
    gathered = _table_rows(ctx, node)
    args = _swap_refs(ctx, node.args, bool(gathered), views)
    kwargs = _swap_refs(ctx, node.kwargs, bool(gathered), views)
    if node.name == "pad":
        if len(args) > 3:
            args = (*args[:3], CONST, *args[4:])
        else:
            kwargs["value"] = CONST
    if node.name == "__setitem__" and len(args) > 2 and not isinstance(args[2], torch.Tensor):
        args = (*args[:2], CONST)  # a number written into the data, not an element id
    if gathered:
        args = (_rows_as_one(ctx, args[0], gathered), *args[1:])
    return node.target(*args, **kwargs), args


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
        elif not _fits_pruning(sizes[0]) and not _follows_counted_attribute(ctx, sizes[0]):
            ctx.fix(ids, f"reshaped to the fixed size {sizes[0]} by {ctx.describe()}")
        return ids
    heads = [i for i, attr in enumerate(attrs[:-1]) if attr is not None]
    if ctx.attention == "heads" and heads:
        ctx.count_with_attribute(attrs[heads[-1]], _whole_heads(ctx, ids, vary[heads[-1]])[:, 0])
        return compress(_whole_heads(ctx, ids, vary[heads[-1]], expand=True))
    inferred_heads = len(vary) == 2 and sizes[0] == -1 and (attrs[1] is not None or _from_attributes(sizes[1]))
    if ctx.attention == "heads" and inferred_heads:  # view(*shape, -1, self.head_dim): the heads follow
        return compress(_whole_heads(ctx, ids, vary[0], expand=True))
    if ctx.attention == "heads" and _inferred_blocks(sizes):
        return _whole_blocks(ctx, ids, vary[0], sizes[1:])
    inner = vary[-1]
    lines = ids.movedim(inner, -1).reshape(-1, ids.shape[inner])
    ctx.space.union(lines[:1].expand_as(lines), lines)
    if inferred_heads and attrs[1] is not None:  # head_dims mode: the head-size attribute counts the kept positions
        ctx.count_with_attribute(attrs[1], lines[0])
    elif not _fits_pruning(sizes[-1]):
        ctx.fix(ids, f"split to the fixed size {sizes[-1]} by {ctx.describe()}")
    return ids


def _whole_heads(ctx: AnalysisContext, ids: torch.Tensor, dim: int, expand: bool = False) -> torch.Tensor:
    """Make every head along ``dim`` one element: returns ``[heads, rest]`` lines, or (``expand``)
    ids of ``ids``'s shape that vary along the heads dim only."""
    moved = ids.movedim(dim, 0)
    per_head = moved.reshape(moved.shape[0], -1)
    ctx.space.union(per_head[:, :1].expand_as(per_head), per_head)
    if not expand:
        return per_head
    return per_head[:, :1].expand_as(per_head).reshape(moved.shape).movedim(0, dim)


def _inferred_blocks(sizes: list) -> bool:
    """``view(B, N, -1, self.n // self.kv + 2, self.head_dim)``: blocks of an inferred count, each
    sized by attributes alone (a KV group of a fused projection: its query heads, key and value)."""
    return len(sizes) > 2 and sizes[0] == -1 and all(
        bare_attribute(s) is not None or _from_attributes(s) for s in sizes[1:])


def _whole_blocks(ctx: AnalysisContext, ids: torch.Tensor, dim: int, sizes: list) -> torch.Tensor:
    """Every block along ``dim`` becomes one element (pruned whole); an attribute in the block's
    sizes whose value is the number of blocks (``self.kv``) counts them, so the export keeps the
    block sizes it computes (``n // kv``) when whole blocks go."""
    line = _whole_heads(ctx, ids, dim)[:, 0]
    for size in sizes:
        for attr in {ref for ref, _ in size.sources if isinstance(ref, AttrRef) and ref.value == len(line)}:
            ctx.count_with_attribute(attr, line)
    return compress(_whole_heads(ctx, ids, dim, expand=True))


def _from_attributes(size: object) -> bool:
    """A size computed from module attributes only (``3 * self.head_size``): a per-head size."""
    return isinstance(size, TracedSize) and not shape_sources(size.sources) and bool(size.sources)


def _follows_counted_attribute(ctx: AnalysisContext, size: object) -> bool:
    """``num_heads * head_dim`` with ``num_heads`` an attribute that the export already sets to
    the kept heads (it sized a head split): the merged size follows the kept heads."""
    if not _from_attributes(size):
        return False
    return any((ref.module, ref.attr) in ctx.size_attributes for ref, _ in size.sources)


def _fits_pruning(size: int) -> bool:
    """A reshape size that follows pruning: ``-1``, or computed from a tensor's shape."""
    return size == -1 or (isinstance(size, TracedSize) and bool(shape_sources(size.sources)))


def _table_rows(ctx: AnalysisContext, node: Node) -> list[int]:
    """Dims of a parameter read through an index tensor (``table[index]``, ``index_select``):
    rows looked up by position, as in a relative-position bias table, are not channels."""
    src = first_input(node)
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


def _repeats_channels(out: torch.Tensor, dim: int, src: torch.Tensor, size: int, n: int) -> bool:
    """Whether dim ``dim`` of ``out`` (sized ``n * k``, ``k`` not a channel count) holds the
    ``n`` source channels each exactly ``k`` times and nothing else (``repeat_kv``'s
    ``reshape(B, kv_heads * n_rep, ...)``): pruning a channel removes its ``k`` copies."""
    if len(src) != 1 or size % n or out.shape[dim] != size:
        return False
    out = compress(out)  # the same distinct lines, without the dims that hold no channels
    line = out.expand([size if d == dim else s for d, s in enumerate(out.shape)]).movedim(dim, -1).reshape(-1, size)
    if not bool((line == line[:1]).all()):
        return False
    values, counts = line[0].unique(return_counts=True)
    return bool((counts == size // n).all()) and torch.equal(values.sort().values, src[0].unique().sort().values)


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
            if block is None and _repeats_channels(out, dim, src, size, n):
                continue  # repeat_kv: n channels, each repeated size // n times, as the code sizes it
            if block is None:
                reason = f"a size computed from its channel count does not fit in {ctx.describe()}"
                if attribute_sources(size.sources):  # ``n // self.heads``: fine when whole heads go
                    ctx.quotient_sizes.append((size.sources, reason, int(size), [src, out]))
                    continue
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
