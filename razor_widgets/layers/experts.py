"""Mixture-of-experts weights stored as 3-D parameters (Mixtral, Qwen-MoE in transformers 5):
``F.linear(x, self.gate_up_proj[e])`` with ``gate_up_proj`` of shape ``[experts, out, in]``.

Each expert layer's intermediate size is pruned (the same positions in every expert), and the
hidden size through the experts' input and output dims; whole experts are not. The module becomes
a :class:`DynamicFusedExperts` whose parameters read masked, and the export slices them. The
decision, the channel rule and the counts: docs/fused-experts.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..channels.channel_space import CONST
from ..registry import MODELS
from ..trace.graph import TensorRef
from .base import LayerKind
from .dynamic_ops import DynamicChannelMixin
from .registry import register_family_type

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext
    from ..trace.graph import Node


@dataclass(frozen=True)
class ExpertWeight:
    """A view of a 3-D expert parameter ``[experts, a, b]`` as the matrix a product uses:
    which of ``a``/``b`` (parameter dims 1, 2) it reads (``in_dim``) and writes (``out_dim``)."""

    param: TensorRef
    in_dim: int
    out_dim: int


def expert_slice(ctx: AnalysisContext, node: Node) -> bool:
    """``P[e]`` (one index) or ``P.transpose(-2, -1)`` of a 3-D parameter: remember what the
    result is (no element per entry); False when it is another read."""
    src = node.input_refs()[0]
    if src.param is None or len(src.shape) != 3:
        return False
    index = node.args[1] if len(node.args) > 1 else None
    if node.name == "__getitem__":
        scalar = isinstance(index, int) or (isinstance(index, TensorRef) and not index.is_float and not index.shape)
        if not scalar:
            return False
        spec = ExpertWeight(src, 2, 1)  # P[e] is [out, in] for F.linear
    elif node.name in ("transpose", "swapaxes") and sorted(d % 3 for d in node.args[1:3]) == [1, 2]:
        spec = ExpertWeight(src, 2, 1)  # [experts, in, out] for a grouped matmul
    else:
        return False
    out = node.output_refs()[0]
    ctx.expert_slices[out.handle] = spec
    ctx.set(out, torch.full([1] * len(out.shape), CONST, dtype=torch.long))
    return True


def expert_linear(ctx: AnalysisContext, node: Node) -> bool:
    """``F.linear(x, P[e])`` (no bias): an expert layer; False when the weight is no expert's."""
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    spec = ctx.expert_slices.get(getattr(weight, "handle", None))
    if spec is None:
        return False
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if bias is not None:
        ctx.unknown(node)
        return True
    _expert_layer(ctx, node, spec)
    return True


def expert_grouped_mm(ctx: AnalysisContext, node: Node) -> None:
    """``torch._grouped_mm(x, W, offs)``: rows of ``x`` grouped by expert, each times its
    expert's matrix of ``W`` (a 3-D parameter, or its transpose)."""
    refs = node.input_refs()
    weight = refs[1] if len(refs) > 1 else None
    spec = ctx.expert_slices.get(getattr(weight, "handle", None))
    if spec is None and weight is not None and weight.param is not None and len(weight.shape) == 3:
        spec = ExpertWeight(weight, 1, 2)
    if spec is None or len(refs[0].shape) != 2:
        return ctx.unknown(node)
    _expert_layer(ctx, node, spec)
    owner = ctx.modules.get(spec.param.param.rpartition(".")[0])
    param = None if owner is None else owner.__dict__.get("_parameters", {}).get(spec.param.param.rpartition(".")[2])
    if param is not None:  # the grouped kernel needs 16-byte strides on both dims
        aligned = max(1, 16 // param.element_size())
        ctx.require_divisor(ctx.first_slot(spec.param.param, False), aligned)
        ctx.require_divisor(ctx.first_slot(spec.param.param, True), aligned)


def _expert_layer(ctx: AnalysisContext, node: Node, spec: ExpertWeight) -> None:
    """Reads ``x``'s last dim into the parameter's ``in_dim``, writes fresh ``out_dim`` elements."""
    owner_name = spec.param.param.rpartition(".")[0]
    owner = ctx.modules.get(owner_name)
    if owner is None:
        return ctx.unknown(node)
    register_family_type(FUSED_EXPERTS, type(owner))
    ctx.layer_params.add(spec.param.param)
    ids_in = ctx.read(node.input_refs()[0], -1)
    ids_out = ctx.fresh_layer_output(spec.param.param, spec.param.shape[spec.out_dim])
    ctx.slot(spec.param.param, False, ids_in, param_dim=spec.in_dim)
    ctx.slot(spec.param.param, True, ids_out, param_dim=spec.out_dim)
    ctx.write(node.output_refs()[0], -1, ids_out)
    return None


class FusedExpertsKind(LayerKind):
    """Modules holding 3-D expert parameters: their types join as the analysis meets them."""

    name = "fused_experts"
    masks_param_slots = True

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """0: the module has no channel sides of its own (its channels are parameter slots)."""
        return 0

    def dynamic_op_for(self, module_type: type) -> type | None:
        """:class:`DynamicFusedExperts`, for every type of the kind."""
        return DynamicFusedExperts


class DynamicFusedExpertsMixin(DynamicChannelMixin):
    """Expert parameters read masked along their pruned dims (``add_param_channel``)."""

    def _channel_counts(self) -> dict[str, int]:
        return {}

    def _init_mutable_attrs(self) -> None:
        super()._init_mutable_attrs()
        self.__dict__["_rw_param_channels"] = []

    def add_param_channel(self, attr: str, dim: int, unit: Any, channel: Any) -> None:
        """Let ``channel`` of ``unit`` mask parameter ``attr`` along ``dim`` (read masked from then on)."""
        self.__dict__["_rw_param_channels"].append((attr, dim, unit, channel))

    def __getattr__(self, name: str) -> Any:
        value = super().__getattr__(name)
        channels = self.__dict__.get("_rw_param_channels")
        if not channels or not isinstance(value, nn.Parameter):
            return value
        for attr, dim, unit, channel in channels:
            if attr == name:
                mask = torch.ones(value.shape[dim], dtype=torch.bool)
                mask[channel.start:channel.end] = unit.channel_mask(channel)
                if not bool(mask.all()):
                    shape = [1] * value.dim()
                    shape[dim] = -1
                    value = value * mask.view(shape).to(device=value.device, dtype=value.dtype)
        return value

    def to_static_op(self) -> nn.Module:
        """The module as its original class, reading its parameters unmasked (the export slices them)."""
        static = self._static_copy({}, {})
        static.__dict__.pop("_rw_param_channels", None)
        return static


class DynamicFusedExperts(DynamicFusedExpertsMixin, nn.Module):
    """A module with 3-D expert parameters read masked (the class adopts the module's type when converted)."""

    static_class = nn.Module


MODELS.register_module(module=DynamicFusedExperts)
FUSED_EXPERTS = FusedExpertsKind()
