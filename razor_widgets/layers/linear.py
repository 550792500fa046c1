"""Linear layers (``nn.Linear`` and ``F.linear`` with a linear layer's weight).

Channels: reads its last dim, writes fresh output features. MACs: ``rows * kept_in * kept_out``
where rows are all leading dims of the output, at their kept sizes (a linear along tokens whose
other dims carry channels passes those on: see ``linear_rule``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..channels.channel_space import varying_dims
from ..registry import MODELS
from ..trace.graph import Node, TensorRef
from .base import LayerGeometry, LayerKind, Term, first_input, weights_along
from .conv import DynamicConvMixin
from .derived_weights import derived_layer_rule, foreign_bias
from .dynamic_ops import index_of, kept_rows, raw

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


def linear_rule(ctx: AnalysisContext, name: str, x: TensorRef, out: TensorRef, out_features: int) -> None:
    """A linear maps the last dim; the other dims are batch dims to it. Applied along a dim
    without channels while other dims carry them (a token-mixing linear on ``x.transpose(1, 2)``),
    it keeps those channels apart and passes them on; its own features stay fixed."""
    ids = ctx.get(x)
    if ids.shape[-1] == 1 and x.shape[-1] > 1 and varying_dims(ids) and bool((ids >= 0).any()):
        reason = f"{ctx.describe()} maps a dim without channels (its input's channels lie on another dim)"
        ids_out = ctx.fresh_layer_output(name, out_features)  # one fixed unit when in == out
        ids_in = ids_out if x.shape[-1] == out_features else ctx.space.fresh(x.shape[-1])
        ctx.fix(torch.cat([ids_in, ids_out]), reason)
        ctx.slot(name, False, ids_in)
        ctx.slot(name, True, ids_out)
        ctx.set(out, ids.reshape((1,) * (len(out.shape) - ids.dim()) + tuple(ids.shape)))
        return
    features_rule(ctx, name, x, out, out_features)


def features_rule(ctx: AnalysisContext, name: str, x: TensorRef, out: TensorRef, out_features: int) -> None:
    """The plain linear map: reads ``x``'s last dim, writes ``out_features`` fresh features there."""
    ids_in = ctx.read(x, -1)
    ids_out = ctx.fresh_layer_output(name, out_features)
    ctx.slot(name, False, ids_in)
    ctx.slot(name, True, ids_out)
    ctx.write(out, -1, ids_out)


def matmul_linear(ctx: AnalysisContext, node: Node) -> bool:
    """``x @ self.weight.T`` in a linear layer whose own forward does the product (Falcon's
    ``FalconLinear``, ``+ self.bias`` after it): the same as ``F.linear``, so the layer's channels
    follow the linear rule (its dynamic op keeps that forward, reading the masked weight).
    False when the product is not of this form (the matmul rule then applies)."""
    refs = node.input_refs()
    if node.name not in ("matmul", "__matmul__") or len(refs) != 2 or len(refs[1].shape) != 2:
        return False
    param = ctx.transposed_params.get(refs[1].handle)
    owner, _, attr = (param or "").rpartition(".")
    module = ctx.modules.get(owner)
    if attr != "weight" or not isinstance(module, nn.Linear) or \
            refs[1].shape != (module.in_features, module.out_features) or not refs[0].is_float:
        return False
    linear_rule(ctx, owner, refs[0], node.output_refs()[0], module.out_features)
    return True


class LinearWeights:
    """Sizes and importance slices of a linear map's ``weight`` (2-D, its output features on dim
    ``weight_out_dim``, its input features on the other) and ``bias`` (its output features)."""

    weight_out_dim = 0  # nn.Linear's [out, in]

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """The bias keeps the kept outputs, the weight the product of both kept sides; others are
        counted whole."""
        if attr == "bias":
            return Term(1, (param.kept(True),))
        if attr == "weight":  # the product of the kept sides, in the weight's layout
            return Term(1, (param.kept(self.weight_out_dim == 0), param.kept(self.weight_out_dim == 1)))
        return None

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The weight with its output features first, and the bias."""
        return {**weights_along(module, self.weight_out_dim, ("weight",)), **weights_along(module, 0, ("bias",))}

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The weight with its input features first."""
        return weights_along(module, 1 - self.weight_out_dim, ("weight",))


class LinearKind(LinearWeights, LayerKind):
    """The layer kind of ``nn.Linear`` and ``F.linear`` with a linear layer's weight."""

    name = "linear"
    weight_rows_are_outputs = True
    module_types = (nn.Linear,)
    functions = ("linear",)

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """A linear module's channel rule (:func:`linear_rule`)."""
        linear_rule(ctx, node.name, first_input(node), node.output_refs()[0], node.target.out_features)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.linear`` with a linear layer's weight; a weight computed from stored ones goes to the
        derived-weight rule."""
        owner = self.function_owner(node, ctx.modules)
        weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        x, out = first_input(node), node.output_refs()[0]
        if owner is None:  # a weight computed from stored ones (weight standardisation, re-param sums)
            return derived_layer_rule(ctx, node, self.module_types + self.family_types,
                                      lambda name, m: linear_rule(ctx, name, x, out, m.out_features))
        linear_rule(ctx, owner.name, x, out, weight.shape[0])
        foreign_bias(ctx, node, owner.name, ctx.fresh_layer_output(owner.name, weight.shape[0]))

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``out_features`` or ``in_features``."""
        return int(module.out_features if is_output else module.in_features)

    def macs(self, call: LayerGeometry) -> list[Term]:
        """Rows (every leading dim, at its kept size: a token-mixing linear's rows hold channels)."""
        rows = tuple(call.kept_output_dim(d) for d in range(len(call.output_shape) - 1))
        return [Term(1, (*rows, call.kept(False), call.kept(True)))]

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """The last dim, which holds the output features."""
        return -1 if isinstance(output, torch.Tensor) else None  # features are the last dim


class DynamicLinearMixin(DynamicConvMixin):
    """A linear layer whose features follow masks (the conv's masked ``weight`` and ``bias``, with
    one group)."""

    container_names = {"in_channels": "in_features", "out_channels": "out_features",
                       "in_features": "in_features", "out_features": "out_features"}

    def _channel_counts(self) -> dict[str, int]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    @property
    def in_channels(self) -> int:
        """``in_features``, under the conv's name (the shared masking code reads it)."""
        return self.in_features

    @property
    def groups(self) -> int:
        """1: a linear layer is a conv with one group to the shared masking code."""
        return 1

    def to_static_op(self) -> nn.Module:
        """A plain ``nn.Linear`` of the kept input and output features."""
        w, b = raw(self, "weight"), raw(self, "bias")
        out_idx = index_of(self.mask("out_channels"), self.out_features)
        in_idx = index_of(self.mask("in_channels"), self.in_features)
        weight = kept_rows(w, out_idx)[:, in_idx.to(w.device)]
        return self._static_copy({"weight": weight, "bias": kept_rows(b, out_idx)}, {},
                                 in_features=len(in_idx), out_features=len(out_idx))


class DynamicLinear(DynamicLinearMixin, nn.Linear):
    """``nn.Linear`` with feature masks."""

    static_class = nn.Linear


LinearKind.dynamic_ops = {nn.Linear: DynamicLinear}
MODELS.register_module(module=DynamicLinear)
LINEAR = LinearKind()
