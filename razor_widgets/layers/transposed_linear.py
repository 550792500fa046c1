"""Linear layers stored transposed and run by ``torch.addmm(bias, x, weight)``: GPT-2's
``Conv1D`` (``weight`` is ``[in, out]``), and any module whose own forward does the same.

Channels: reads the input's last dim, writes fresh output features (as a linear layer). The
module is traced through; the rule of ``addmm`` finds the module that owns ``weight`` and the
kind adopts its type (``register_family_type``), so the module becomes a
:class:`DynamicTransposedLinear`: ``weight`` and ``bias`` read masked, and the export keeps
the kept rows and columns. MACs: ``rows * kept_in * kept_out``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..dynamic_ops import DynamicChannelMixin, index_of, kept_rows, raw
from ..registry import MODELS
from .base import FunctionOwner, LayerGeometry, LayerKind, Term, positions, weights_along
from .registry import register_family_type

if TYPE_CHECKING:
    from ..analysis import AnalysisContext
    from ..tracing import Node, TensorRef


class TransposedLinearKind(LayerKind):
    name = "transposed_linear"
    functions = ("addmm",)

    def function_owner(self, node: Node, modules: dict[str, nn.Module]) -> FunctionOwner | None:
        """The module whose 2-D ``weight`` is ``mat2`` (and whose ``bias``, if any, is ``input``)."""
        weight = _arg(node, 2, "mat2")
        if weight is None or weight.param is None or len(weight.shape) != 2:
            return None
        owner, _, attr = weight.param.rpartition(".")
        module = modules.get(owner)
        bias = _arg(node, 0, "input")
        if module is None or attr != "weight" or (bias is not None and bias.param != f"{owner}.bias"):
            return None
        return FunctionOwner(owner, module, attr)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        owner = self.function_owner(node, ctx.modules)
        x = _arg(node, 1, "mat1")
        if owner is None or x is None or not x.is_float:
            return ctx.unknown(node)
        register_family_type(self, type(owner.module))
        ids_in = ctx.read(x, -1)
        ids_out = ctx.fresh_layer_output(owner.name, _arg(node, 2, "mat2").shape[1])
        ctx.slot(owner.name, False, ids_in)
        ctx.slot(owner.name, True, ids_out)
        ctx.write(node.output_refs()[0], -1, ids_out)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        return int(raw(module, "weight").shape[1 if is_output else 0])

    def macs(self, call: LayerGeometry) -> list[Term]:
        rows = positions(call.output_shape, self.channels(call.module, True))
        return [Term(rows, (call.kept(False), call.kept(True)))]

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        if attr == "bias":
            return Term(1, (param.kept(True),))
        if attr == "weight":  # both layouts: the product of the kept sides
            return Term(1, (param.kept(False), param.kept(True)))
        return None

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {**weights_along(module, 1, ("weight",)), **weights_along(module, 0, ("bias",))}

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return weights_along(module, 0, ("weight",))

    def dynamic_op_for(self, module_type: type) -> type | None:
        return DynamicTransposedLinear


def _arg(node: Node, index: int, key: str) -> TensorRef | None:
    from ..tracing import TensorRef

    value = node.args[index] if len(node.args) > index else node.kwargs.get(key)
    return value if isinstance(value, TensorRef) else None


class DynamicTransposedLinearMixin(DynamicChannelMixin):
    """``weight [in, out]`` and ``bias [out]`` read masked; the export keeps the kept ones."""

    def _channel_counts(self) -> dict[str, int]:
        n_in, n_out = raw(self, "weight").shape
        return {"in_channels": int(n_in), "out_channels": int(n_out)}

    @property
    def weight(self) -> torch.Tensor:
        w = raw(self, "weight")
        if "mutable_attrs" not in self._modules:
            return w
        m_in, m_out = self.mask("in_channels"), self.mask("out_channels")
        if m_in is not None:
            w = w * m_in.to(device=w.device, dtype=w.dtype).unsqueeze(1)
        if m_out is not None:
            w = w * m_out.to(device=w.device, dtype=w.dtype)
        return w

    @property
    def bias(self) -> torch.Tensor | None:
        b = raw(self, "bias") if "bias" in self._parameters else None
        m_out = self.mask("out_channels") if b is not None and "mutable_attrs" in self._modules else None
        return b if m_out is None else b * m_out.to(device=b.device, dtype=b.dtype)

    def to_static_op(self) -> nn.Module:
        w = raw(self, "weight")
        in_idx = index_of(self.mask("in_channels"), w.shape[0])
        out_idx = index_of(self.mask("out_channels"), w.shape[1])
        params = {"weight": kept_rows(w, in_idx)[:, out_idx.to(w.device)]}
        if "bias" in self._parameters:
            params["bias"] = kept_rows(raw(self, "bias"), out_idx)
        sizes = {attr: n for attr, n in (("nx", len(in_idx)), ("nf", len(out_idx))) if hasattr(self, attr)}
        return self._static_copy(params, {}, **sizes)  # Conv1D's documented nx, nf


class DynamicTransposedLinear(DynamicTransposedLinearMixin, nn.Module):
    static_class = nn.Module


MODELS.register_module(module=DynamicTransposedLinear)
TRANSPOSED_LINEAR = TransposedLinearKind()


class OwnedLinearKind(TransposedLinearKind):
    """``F.linear(x, self.weight)`` in a module that is not an ``nn.Linear`` (an MoE router such
    as Mixtral's ``TopKRouter``): the same as a linear layer, weight ``[out, in]``."""

    name = "owned_linear"
    functions = ()
    in_dim, out_dim = 1, 0

    def function_owner(self, node: Node, modules: dict[str, nn.Module]) -> FunctionOwner | None:
        weight = _arg(node, 1, "weight")
        if weight is None or weight.param is None or len(weight.shape) != 2:
            return None
        owner, _, attr = weight.param.rpartition(".")
        module = modules.get(owner)
        bias = _arg(node, 2, "bias")
        if module is None or isinstance(module, nn.Linear) or attr != "weight" or (
                bias is not None and bias.param != f"{owner}.bias"):
            return None
        return FunctionOwner(owner, module, attr)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        owner = self.function_owner(node, ctx.modules)
        x = node.input_refs()[0]
        if owner is None or not x.is_float:
            return ctx.unknown(node)
        register_family_type(self, type(owner.module))
        ids_in = ctx.read(x, -1)
        ids_out = ctx.fresh_layer_output(owner.name, _arg(node, 1, "weight").shape[0])
        ctx.slot(owner.name, False, ids_in)
        ctx.slot(owner.name, True, ids_out)
        ctx.write(node.output_refs()[0], -1, ids_out)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        return int(raw(module, "weight").shape[0 if is_output else 1])

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return weights_along(module, 0, ("weight", "bias"))

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return weights_along(module, 1, ("weight",))

    def dynamic_op_for(self, module_type: type) -> type | None:
        return DynamicOwnedLinear


class DynamicOwnedLinearMixin(DynamicTransposedLinearMixin):
    """``weight [out, in]``: the transposed layout of :class:`DynamicTransposedLinearMixin`."""

    def _channel_counts(self) -> dict[str, int]:
        n_out, n_in = raw(self, "weight").shape
        return {"in_channels": int(n_in), "out_channels": int(n_out)}

    @property
    def weight(self) -> torch.Tensor:
        w = raw(self, "weight")
        if "mutable_attrs" not in self._modules:
            return w
        m_in, m_out = self.mask("in_channels"), self.mask("out_channels")
        if m_in is not None:
            w = w * m_in.to(device=w.device, dtype=w.dtype)
        if m_out is not None:
            w = w * m_out.to(device=w.device, dtype=w.dtype).unsqueeze(1)
        return w

    def to_static_op(self) -> nn.Module:
        w = raw(self, "weight")
        out_idx = index_of(self.mask("out_channels"), w.shape[0])
        in_idx = index_of(self.mask("in_channels"), w.shape[1])
        params = {"weight": kept_rows(w, out_idx)[:, in_idx.to(w.device)]}
        if "bias" in self._parameters:
            params["bias"] = kept_rows(raw(self, "bias"), out_idx)
        sizes = {attr: n for attr, n in (("hidden_dim", len(in_idx)),) if getattr(self, attr, None) == w.shape[1]}
        return self._static_copy(params, {}, **sizes)


class DynamicOwnedLinear(DynamicOwnedLinearMixin, nn.Module):
    static_class = nn.Module


MODELS.register_module(module=DynamicOwnedLinear)
OWNED_LINEAR = OwnedLinearKind()
