"""Linear layers stored transposed and run by ``torch.addmm(bias, x, weight)``: GPT-2's
``Conv1D`` (``weight`` is ``[in, out]``), and any module whose own forward does the same.

The kind adopts the type of the module that owns ``weight``, which becomes a
:class:`DynamicTransposedLinear`; :class:`OwnedLinearKind` does the same for
``F.linear(x, self.weight)`` in a module that is not an ``nn.Linear`` (an MoE router). Both share
the linear layer's rule, sizes and importance slices. How: docs/layer-kinds.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..registry import MODELS
from ..trace.graph import TensorRef
from .base import FunctionOwner, LayerGeometry, LayerKind, Term, positions
from .dynamic_ops import DynamicChannelMixin, index_of, kept_rows, raw
from .linear import LinearWeights, features_rule
from .registry import register_family_type

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext
    from ..trace.graph import Node


class TransposedLinearKind(LinearWeights, LayerKind):
    """``torch.addmm(bias, x, weight)`` with a module's own ``weight [in, out]`` (GPT-2's Conv1D)."""

    name = "transposed_linear"
    functions = ("addmm",)
    weight_out_dim = 1
    input_arg, weight_arg, bias_arg = (1, "mat1"), (2, "mat2"), (0, "input")  # (position, keyword)

    def function_owner(self, node: Node, modules: dict[str, nn.Module]) -> FunctionOwner | None:
        """The module whose 2-D ``weight`` the call uses (and whose ``bias``, if any, it adds)."""
        weight = _arg(node, *self.weight_arg)
        if weight is None or weight.param is None or len(weight.shape) != 2:
            return None
        owner, _, attr = weight.param.rpartition(".")
        module = modules.get(owner)
        bias = _arg(node, *self.bias_arg)
        if module is None or not self.owns(module) or attr != "weight" or (
                bias is not None and bias.param != f"{owner}.bias"):
            return None
        return FunctionOwner(owner, module, attr)

    def owns(self, module: nn.Module) -> bool:
        """Whether this kind describes ``module``'s linear map (any module's, for ``addmm``)."""
        return True

    def layer_input(self, node: Node) -> TensorRef | None:
        """The layer's input among the call's arguments (``mat1`` of ``addmm``), or None."""
        return _arg(node, *self.input_arg)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """The call with a module's own weight (and bias) is that module's linear map; the module's
        type joins the kind."""
        owner = self.function_owner(node, ctx.modules)
        x = self.layer_input(node)
        if owner is None or x is None or not x.is_float:
            return ctx.unknown(node)
        register_family_type(self, type(owner.module))
        out_features = _arg(node, *self.weight_arg).shape[self.weight_out_dim]
        features_rule(ctx, owner.name, x, node.output_refs()[0], out_features)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """The output or input size, read from the weight's layout."""
        return int(raw(module, "weight").shape[self.weight_out_dim if is_output else 1 - self.weight_out_dim])

    def macs(self, call: LayerGeometry) -> list[Term]:
        """``rows * kept_in * kept_out``, rows being every output position of a feature."""
        rows = positions(call.output_shape, self.channels(call.module, True))
        return [Term(rows, (call.kept(False), call.kept(True)))]

    def dynamic_op_for(self, module_type: type) -> type | None:
        """:class:`DynamicTransposedLinear`, for every type of the kind."""
        return DynamicTransposedLinear


def _arg(node: Node, index: int, key: str) -> TensorRef | None:
    value = node.args[index] if len(node.args) > index else node.kwargs.get(key)
    return value if isinstance(value, TensorRef) else None


class DynamicTransposedLinearMixin(DynamicChannelMixin):
    """``weight [in, out]`` and ``bias [out]`` read masked; the export keeps the kept ones."""

    weight_out_dim = 1  # the dim of ``weight`` that holds the output features

    def _weight_sides(self) -> tuple[tuple[str, int], ...]:
        """Each side's container name and its dim of ``weight``."""
        return ("in_channels", 1 - self.weight_out_dim), ("out_channels", self.weight_out_dim)

    def _channel_counts(self) -> dict[str, int]:
        shape = raw(self, "weight").shape
        return {side: int(shape[dim]) for side, dim in self._weight_sides()}

    @property
    def weight(self) -> torch.Tensor:
        """The weight with the pruned input and output features zeroed."""
        w = raw(self, "weight")
        if "mutable_attrs" not in self._modules:
            return w
        for side, dim in self._weight_sides():
            mask = self.mask(side)
            if mask is not None:
                mask = mask.to(device=w.device, dtype=w.dtype)
                w = w * (mask.unsqueeze(1) if dim == 0 else mask)
        return w

    @property
    def bias(self) -> torch.Tensor | None:
        """The bias with the pruned output features zeroed (None without a bias)."""
        b = raw(self, "bias") if "bias" in self._parameters else None
        m_out = self.mask("out_channels") if b is not None and "mutable_attrs" in self._modules else None
        return b if m_out is None else b * m_out.to(device=b.device, dtype=b.dtype)

    def to_static_op(self) -> nn.Module:
        """The module as its original class with the kept weight rows and columns (and its own size
        attributes)."""
        w = raw(self, "weight")
        kept = {dim: index_of(self.mask(side), w.shape[dim]) for side, dim in self._weight_sides()}  # per weight dim
        params = {"weight": kept_rows(w, kept[0])[:, kept[1].to(w.device)]}
        out_idx, in_idx = kept[self.weight_out_dim], kept[1 - self.weight_out_dim]
        if "bias" in self._parameters:
            params["bias"] = kept_rows(raw(self, "bias"), out_idx)
        return self._static_copy(params, {}, **self._static_sizes(len(in_idx), len(out_idx)))

    def _static_sizes(self, n_in: int, n_out: int) -> dict[str, int]:
        """The module's own size attributes, at the kept sizes (Conv1D's documented nx, nf)."""
        return {attr: n for attr, n in (("nx", n_in), ("nf", n_out)) if hasattr(self, attr)}


class DynamicTransposedLinear(DynamicTransposedLinearMixin, nn.Module):
    """A module with a transposed linear weight, read masked (the class adopts the module's type
    when converted)."""

    static_class = nn.Module


MODELS.register_module(module=DynamicTransposedLinear)
TRANSPOSED_LINEAR = TransposedLinearKind()


class OwnedLinearKind(TransposedLinearKind):
    """``F.linear(x, self.weight)`` in a module that is not an ``nn.Linear`` (an MoE router such
    as Mixtral's ``TopKRouter``): the same as a linear layer, weight ``[out, in]``."""

    name = "owned_linear"
    functions = ()
    weight_out_dim = 0
    weight_arg, bias_arg = (1, "weight"), (2, "bias")

    def owns(self, module: nn.Module) -> bool:
        """Every module but an ``nn.Linear`` (which is the linear kind's)."""
        return not isinstance(module, nn.Linear)

    def layer_input(self, node: Node) -> TensorRef | None:
        """The first tensor of the ``F.linear`` call."""
        return node.input_refs()[0]

    def dynamic_op_for(self, module_type: type) -> type | None:
        """:class:`DynamicOwnedLinear`, for every type of the kind."""
        return DynamicOwnedLinear


class DynamicOwnedLinearMixin(DynamicTransposedLinearMixin):
    """``weight [out, in]``: the transposed layout of :class:`DynamicTransposedLinearMixin`."""

    weight_out_dim = 0

    def _static_sizes(self, n_in: int, n_out: int) -> dict[str, int]:
        """A router's ``hidden_dim`` where it is the weight's input size."""
        return {"hidden_dim": n_in} if getattr(self, "hidden_dim", None) == raw(self, "weight").shape[1] else {}


class DynamicOwnedLinear(DynamicOwnedLinearMixin, nn.Module):
    """A module with its own ``[out, in]`` linear weight, read masked (the class adopts the module's
    type when converted)."""

    static_class = nn.Module


MODELS.register_module(module=DynamicOwnedLinear)
OWNED_LINEAR = OwnedLinearKind()
