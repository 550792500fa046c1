"""The channel rules: one table that says, per op, how channels flow from inputs to outputs.

A rule gets the analysis context and the recorded node. Four kinds cover almost everything:
``passthrough``, ``elementwise``, ``movement`` (replayed on the id tensor) and ``layer`` (owned by
the layer kinds). Products live in ``rules_matmul.py``, the movement rules and the reshape size
checks in ``rules_movement.py``; this module holds the rest and the table. Anything not in the
table makes the channels it touches non-prunable, with a warning. The kinds of rule:
docs/channel-analysis.md.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..channels.channel_space import CONST, NONE, varying_dims
from ..channels.context import AnalysisContext
from ..channels.op_names import CREATION, ELEMENTWISE, PASSTHROUGH, REDUCTIONS
from ..channels.unit_traits import record_sum
from ..layers import function_kind, leaf_kind
from ..layers.channel_mean import MEAN_OPS, channel_mean
from ..layers.experts import expert_grouped_mm, expert_linear
from ..layers.linear import matmul_linear
from ..layers.transposed_linear import OWNED_LINEAR
from ..trace.graph import Node, TensorRef
from ..trace.traced_size import TracedSize
from .rules_channel_ops import CHANNEL_OPS, im2col
from .rules_matmul import add_product, einsum, matmul, sdpa
from .rules_movement import RESHAPES, creation, first_input, movement

Rule = Callable[[AnalysisContext, Node], None]


# -- generic rules ----------------------------------------------------------------------------
def passthrough(ctx: AnalysisContext, node: Node) -> None:
    """Elementwise in one tensor (activations, dropout, casts): every output carries the first
    input's channels."""
    ids = ctx.get(first_input(node))
    for ref in node.output_refs():
        ctx.set(ref, ids if ids.dim() == len(ref.shape) else ids.expand(ref.shape))


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
    part += [i for r, i, s in zip(refs, ids, shapes) if _spreads(r, i, s, part, out.shape)]
    for i in ids:  # broadcast across another operand's channels: its own meet them all
        if not any(i is p for p in part) and bool((i >= 0).any()):
            ctx.fix(i, f"broadcast across channels in {ctx.describe()}")
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
    record_sum(ctx, node, refs, ids, rep)  # a residual join: what the unit is (unit_traits.py)


def _spreads(ref: TensorRef, ids: torch.Tensor, shape: tuple[int, ...], part: list[torch.Tensor],
             out_shape: tuple[int, ...]) -> bool:
    """A parameter (a layer scale ``gamma * x``) meeting data whose ids also vary along a dim the
    parameter is broadcast over (the tokens of ``cat([attn(x)[:, :1], x[:, 1:]], 1)``): its
    channels match the data's channels position by position along the dims where it varies,
    so each of its elements joins that channel at every position of the other dims. Only when
    it varies along some dim at full size and every operand with elements varies there too."""
    if ref.param is None or any(ids is p for p in part):
        return False
    own = varying_dims(ids)
    carriers = [p for p in part if bool((p >= 0).any())]
    return bool(own) and bool(carriers) and all(shape[d] == out_shape[d] for d in own) and \
        all(p.shape[d] > 1 for p in carriers for d in own)


def reduction(ctx: AnalysisContext, node: Node) -> None:
    """Reductions and softmax: fine across non-channel dims, no rule across channel dims."""
    if _binary_form(node):  # torch.min(a, b), torch.max(a, b): elementwise
        return elementwise(ctx, node)
    src = first_input(node)
    ids = ctx.get(src)
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if not _is_dims(dims):
        return ctx.unknown(node)
    if node.name == "normalize":  # normalize(x, p=2.0, dim=1)
        dims = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 1)
    ndim = len(src.shape)
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(ndim))
    dims = [d % ndim for d in ([dims] if isinstance(dims, int) else dims)]
    if any(ids.shape[d] > 1 for d in dims):
        combined = _combine_copies(ctx, ids, dims) if node.name in COMBINING else None
        if combined is None:  # a reduction over the channels themselves
            if node.name in MEAN_OPS and len(dims) == 1:
                return channel_mean(ctx, node, dims[0])
            return ctx.unknown(node)
        ids = combined
    if node.name in ("softmax", "log_softmax", "cumsum", "cumprod", "normalize"):
        return passthrough(ctx, node)
    at = 3 if node.name in ("std", "var") else 2  # std(x, dim, unbiased, keepdim)
    positional = node.args[at] if len(node.args) > at and isinstance(node.args[at], bool) else False
    keepdim = node.kwargs.get("keepdim", positional)
    out = ids
    for d in sorted(dims, reverse=True):
        if not keepdim:
            out = out.squeeze(d)
    for ref in node.output_refs():
        ctx.set(ref, out if out.dim() == len(ref.shape) else out.reshape([1] * len(ref.shape)))


COMBINING = {"mean", "sum", "amax", "amin", "max", "min", "prod", "logsumexp"}


def _combine_copies(ctx: AnalysisContext, ids: torch.Tensor, dims: list[int]) -> torch.Tensor | None:
    """A reduction over a dim that holds several copies of the same channels
    (``torch.stack([a, b]).mean(0)``) combines them position by position, as ``a + b`` does:
    the copies are one set of channels; returns the ids with one copy left. None when no other
    dim holds channels: the reduction is then over the channels themselves (a value use)."""
    combined, pairs = ids, []
    for d in dims:
        if combined.shape[d] > 1:
            copies = combined.movedim(d, 0)
            if not bool((copies >= 0).all()):  # every copy has elements where the first has
                return None
            pairs.append((copies[:1], copies[1:]))  # each copy meets the first, in one union
            combined = copies[:1].movedim(0, d)
    if not varying_dims(combined):  # checked before any union: the channels themselves stay apart
        return None
    for first, copy in pairs:
        ctx.space.union(first, copy)
    return combined


def tensor_unfold(ctx: AnalysisContext, node: Node) -> None:
    """``Tensor.unfold(dim, size, step)`` (sliding windows, as in halo attention); ``F.unfold``
    (im2col, channels times kernel positions in one dim) goes to ``im2col``."""
    if node.target is not torch.Tensor.unfold:
        return im2col(ctx, node)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dimension")
    ids = ctx.get(first_input(node))
    if ids.shape[dim] == 1:  # windows of positions that hold no channels: the ids stay
        ctx.set(node.output_refs()[0], ids.unsqueeze(-1))
        return None
    return movement(ctx, node)


def _binary_form(node: Node) -> bool:
    """``min``/``max`` of two tensors (``other`` given) are elementwise, not reductions."""
    other = node.kwargs.get("other", node.args[1] if len(node.args) > 1 else None)
    return node.name in ("min", "max") and isinstance(other, TensorRef)


def _is_dims(dims: object) -> bool:
    return dims is None or isinstance(dims, int) or (
        isinstance(dims, (list, tuple)) and all(isinstance(d, int) for d in dims))


def pooling(ctx: AnalysisContext, node: Node, spatial: int) -> None:
    """Pooling over the last ``spatial`` dims: a passthrough, unless those dims carry channels (then
    no rule)."""
    src = first_input(node)
    ids = ctx.get(src)
    if any(ids.shape[d] > 1 for d in range(ids.dim() - spatial, ids.dim())):
        return ctx.unknown(node)
    passthrough(ctx, node)


# -- the table ----------------------------------------------------------------------------------
MOVEMENT = RESHAPES | {
    "permute", "transpose", "t", "T", "mT", "swapaxes", "movedim", "squeeze", "unsqueeze", "__getitem__",
    "narrow", "select", "index_select", "chunk", "split", "tensor_split", "unbind", "cat",
    "concat", "concatenate", "stack", "expand", "expand_as", "broadcast_to", "repeat", "roll", "flip", "pad",
    "__setitem__", "channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "split_with_sizes",
}
POOLING = {
    "max_pool1d": 1, "avg_pool1d": 1, "adaptive_avg_pool1d": 1, "adaptive_max_pool1d": 1,
    "max_pool2d": 2, "avg_pool2d": 2, "adaptive_avg_pool2d": 2, "adaptive_max_pool2d": 2,
    "max_pool3d": 3, "avg_pool3d": 3, "adaptive_avg_pool3d": 3, "adaptive_max_pool3d": 3,
    "interpolate": 0, "upsample": 0, "max_pool2d_with_indices": 2,
    "max_pool1d_with_indices": 1, "max_pool3d_with_indices": 3, "max_unpool1d": 1, "max_unpool2d": 2,
    "max_unpool3d": 3, "lp_pool1d": 1, "lp_pool2d": 2, "lp_pool3d": 3,
}
PRODUCTS: dict[str, Rule] = {
    "matmul": matmul, "__matmul__": matmul, "bmm": matmul, "mm": matmul, "einsum": einsum,
    "scaled_dot_product_attention": sdpa, "unfold": tensor_unfold, "_grouped_mm": expert_grouped_mm,
    "baddbmm": add_product, "addbmm": add_product, "addmm": add_product,
}


def module_rule(module: nn.Module) -> Rule | None:
    """The rule of a layer type, also for subclasses that keep the base class's forward."""
    kind = leaf_kind(module)
    return None if kind is None else kind.module_rule


class RuleTable:
    """Dispatch a recorded node to its rule."""

    def is_leaf(self, module: nn.Module) -> bool:
        """Whether the tracer records ``module`` as one node: it has a layer kind whose forward it keeps."""
        return leaf_kind(module) is not None

    def apply(self, ctx: AnalysisContext, node: Node) -> None:
        """Run the node's rule. A rule that meets an op form it was not written for (it raises)
        freezes that op's channels instead, with the error in the reason: the rest of the model
        stays prunable, and what the rule did before it raised only couples channels that are
        now fixed."""
        try:
            if node.kind == "module":
                return leaf_kind(node.target).module_rule(ctx, node)
            self._apply_function(ctx, node)
            ctx.carry_const_reasons(node)
        except Exception as exc:  # noqa: BLE001 (any error of a rule is an unexpected op form)
            ctx.unknown(node, detail=f"its rule does not handle this form: {type(exc).__name__}: {exc}")

    def _apply_function(self, ctx: AnalysisContext, node: Node) -> None:
        name = node.name
        if not node.input_refs():
            return creation(ctx, node)
        if name == "linear" and expert_linear(ctx, node):  # F.linear(x, experts[e]): 3-D expert weights
            return None
        if name == "linear" and OWNED_LINEAR.function_owner(node, ctx.modules) is not None:  # a router's weight
            return OWNED_LINEAR.function_rule(ctx, node)
        if matmul_linear(ctx, node):  # ``x @ self.weight.T`` in a linear layer's own forward
            return None
        kind = function_kind(name)
        if kind is not None and not (name in PRODUCTS and kind.function_owner(node, ctx.modules) is None):
            return kind.function_rule(ctx, node)  # an addmm without a layer's weight is a product
        if name in PRODUCTS:
            return PRODUCTS[name](ctx, node)
        if name in CHANNEL_OPS:
            return CHANNEL_OPS[name](ctx, node)
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
            return pooling(ctx, node, POOLING[name] or len(first_input(node).shape) - 2)
        return ctx.unknown(node)


RULES = RuleTable()
