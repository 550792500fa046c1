"""Weights computed in the forward from stored parameters (weight standardisation, re-param blocks).

``F.conv2d(x, w)`` where ``w`` is not a parameter but is computed from one or more stored conv or
linear weights (``(self.weight - mean) / std``; ``self.conv3.weight + F.pad(self.conv1.weight,
[1, 1, 1, 1])``) is that layer: its channels are the stored weights' channels. The derivation is
read back through the recorded graph and accepted only when every step keeps the positions of
the output and input channels (elementwise ops, reshapes that come back to the weight's shape,
pads of the kernel dims) or reduces over them (means, norms: they mix the input channels, which stay
fixed unless a conv standardises its own weight in its own forward: the dynamic conv runs it on the
kept inputs, as the export does). The analysis and the counter both read this.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from ..channels.channel_space import varying_dims
from ..channels.op_names import CREATION, ELEMENTWISE, PASSTHROUGH
from ..trace.graph import Node, TensorRef, TracedGraph

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext

KEEP_POSITIONS = {"reshape", "view", "reshape_as", "view_as", "flatten", "unflatten", "contiguous", "clone",
                  "detach", "to", "float", "half", "double", "bfloat16", "type_as"}
MIXING = {"mean", "sum", "std", "var", "var_mean", "std_mean", "norm", "normalize", "batch_norm",
          "layer_norm", "group_norm", "instance_norm", "amax", "amin", "linalg_vector_norm"}
MAX_STEPS = 64  # a derivation longer than this is not a weight transform
_PRODUCERS = WeakIdKeyDictionary()  # graph -> {tensor handle: the node that made it}


@dataclass
class DerivedWeight:
    """The stored weights a computed weight comes from; ``layer`` is the one whose shape it has."""

    layer: str
    module: nn.Module
    sources: list[str] = field(default_factory=list)  # every layer whose stored weight is summed in
    mixes_inputs: bool = False  # some step reduces over the input channels (standardisation)


def _producers(graph: TracedGraph) -> dict[int, Node]:
    found = _PRODUCERS.get(graph)
    if found is None:
        found = {ref.handle: node for node in graph.nodes for ref in node.output_refs()}
        _PRODUCERS[graph] = found
    return found


def _elementwise_names() -> set[str]:
    return PASSTHROUGH | ELEMENTWISE | CREATION


def _pads_kernel_only(node: Node, ndim: int) -> bool:
    pad = node.kwargs.get("pad", node.args[1] if len(node.args) > 1 else ())
    return len(pad) // 2 <= ndim - 2


def derived_weight(graph: TracedGraph, weight: Any, kinds: tuple[type, ...]) -> DerivedWeight | None:
    """The layer a computed ``weight`` (a ``TensorRef``) belongs to, or None when it is not a
    position-keeping transform of stored weights of ``kinds`` layers."""
    if not isinstance(weight, TensorRef) or weight.param is not None or len(weight.shape) < 2:
        return None
    producers, keep = _producers(graph), _elementwise_names() | KEEP_POSITIONS
    stack, seen, params, mixes, steps = [weight], set(), [], False, 0
    while stack:
        ref = stack.pop()
        if ref.handle in seen:
            continue
        seen.add(ref.handle)
        if ref.param is not None:
            params.append(ref)
            continue
        node = producers.get(ref.handle)
        if node is None:
            continue  # a model input or a constant made outside the graph
        steps += 1
        if node.kind == "module" or steps > MAX_STEPS:
            return None
        if node.name in MIXING:
            mixes = True
        elif node.name == "pad":
            if not _pads_kernel_only(node, len(weight.shape)):
                return None
        elif node.name not in keep:
            return None
        stack.extend(node.input_refs())
    return _from_sources(graph, weight, params, kinds, mixes)


def _from_sources(graph: TracedGraph, weight: TensorRef, params: list[TensorRef], kinds: tuple[type, ...],
                  mixes: bool) -> DerivedWeight | None:
    layers = []
    for ref in params:
        owner, _, attr = ref.param.rpartition(".")
        module = graph.modules.get(owner)
        if attr == "weight" and isinstance(module, kinds) and not getattr(module, "transposed", False):
            if tuple(ref.shape[:2]) != tuple(weight.shape[:2]):
                return None  # another layout: not the same channels
            layers.append((owner, module, tuple(ref.shape) == tuple(weight.shape)))
    primary = [(name, module) for name, module, same in layers if same]
    if not primary:
        return None
    names = list(dict.fromkeys(name for name, _, _ in layers))
    return DerivedWeight(primary[0][0], primary[0][1], names, mixes and weight.shape[1] > 1)


def derived_layer_rule(ctx: AnalysisContext, node: Node, kinds: tuple[type, ...],
                       layer_rule: Callable[[str, nn.Module], None]) -> None:
    """The channel rule of ``F.conv*`` / ``F.linear`` with a computed weight: ``layer_rule(name,
    module)`` (the kind's own rule) for the layer whose weight it is; every layer whose weight is
    summed in shares its input and output channels, the computed weight's and bias's rows are
    its output channels, and a weight normalised over its input channels keeps those fixed."""
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    derived = derived_weight(ctx.graph, weight, kinds)
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    if derived is None or not set(varying_dims(ctx.get(weight))) <= {0} \
            or groups != getattr(derived.module, "groups", 1):
        return ctx.unknown(node)
    x, out = node.input_refs()[0], node.output_refs()[0]
    layer_rule(derived.layer, derived.module)
    dim = -1 if len(weight.shape) == 2 else (1 if len(x.shape) == len(weight.shape) else 0)
    ids_in, ids_out = ctx.read(x, dim), ctx.get(out).reshape(-1)
    for ref in (weight, node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")):
        rows_are_outputs(ctx, ref, ids_out)
    for layer in derived.sources:
        ctx.slot(layer, False, ids_in)
        ctx.slot(layer, True, ids_out)
    if derived.mixes_inputs and not standardised_in_own_forward(node, derived):
        ctx.fix(ids_in, f"the weight of {derived.layer!r} is normalised over its input channels in {ctx.describe()}")
    elif derived.mixes_inputs and math.prod(weight.shape[2:]) == 1:
        ctx.require_min(ids_in, 2)  # a 1x1 kernel standardised over one input: a variance of one value


def standardised_in_own_forward(node: Node, derived: DerivedWeight) -> bool:
    """A conv's weight normalised over its inputs in the conv's own forward, from its own weight only
    (weight standardisation: ``StdConv2d``, ``ScaledStdConv2d``): its inputs can be pruned, since the
    dynamic conv runs that forward on the kept inputs with the kept columns (the statistics over the
    kept inputs), as the export does. Computed anywhere else, the statistics would see the pruned ones."""
    return (node.scope == derived.layer and derived.sources == [derived.layer]
            and not isinstance(derived.module, nn.Linear))


def rows_are_outputs(ctx: AnalysisContext, ref: Any, ids_out: torch.Tensor) -> None:
    """A weight or bias tensor ``ref`` computed in the forward (``torch.cat((q_bias, k_bias,
    v_bias))``) whose rows are a layer's output channels: its elements are those channels;
    rows of constant data (a zero buffer) keep theirs fixed, since the export cannot cut them."""
    if not isinstance(ref, TensorRef):
        return
    rows = ctx.get(ref)
    if rows.shape[0] not in (1, ids_out.numel()) or not set(varying_dims(rows)) <= {0}:
        ctx.fix(torch.cat([rows.reshape(-1), ids_out]),
                f"{ref.param or 'a computed weight or bias'} is not per output channel in {ctx.describe()}")
        return
    rows = rows.reshape(-1).expand(ids_out.numel())
    valid = rows >= 0
    ctx.space.union(rows[valid], ids_out[valid])
    if not bool(valid.all()):
        ctx.fix(ids_out[~valid], f"a bias of constant data in {ctx.describe()}")


def foreign_bias(ctx: AnalysisContext, node: Node, owner: str, ids_out: torch.Tensor) -> None:
    """``F.linear(x, self.qkv.weight, bias=computed)``: a bias that is not the layer's own."""
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if isinstance(bias, TensorRef) and bias.param != f"{owner}.bias":
        rows_are_outputs(ctx, bias, ids_out)
