"""torch's own RMS norm over one dim (``nn.RMSNorm`` and ``F.rms_norm`` with an RMSNorm's weight).

Channels: the normalised last dim; input and output channels are one. A pruned RMS norm
averages over the kept channels only, in the masked model as in the export. No MACs.
(Hugging Face's RMSNorm modules compute the mean themselves: ``layers/channel_mean.py``.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..dynamic_ops import DynamicChannelMixin, index_of, kept_rows
from ..registry import MODELS
from .base import LayerGeometry, LayerKind, Term, coupled, first_input, node_arg
from .batch_norm import norm_param_size, per_channel_weights

if TYPE_CHECKING:
    from ..analysis import AnalysisContext
    from ..tracing import Node


class RMSNormKind(LayerKind):
    name = "rms_norm"
    module_types = (nn.RMSNorm,)
    functions = ("rms_norm",)
    owner_args = ((2, "weight"),)

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        if len(node.target.normalized_shape) != 1:
            return ctx.unknown(node)
        coupled(ctx, node.name, first_input(node), node.output_refs()[0], -1)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        owner = self.function_owner(node, ctx.modules)
        shape = node_arg(node, 1, "normalized_shape")
        if owner is None or len(shape) != 1:
            return ctx.unknown(node)
        coupled(ctx, owner.name, first_input(node), node.output_refs()[0], -1)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        return int(module.normalized_shape[-1])

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        return norm_param_size(param, shape)

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return per_channel_weights(module)

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return per_channel_weights(module)


class _KeptRMSNorm(TorchFunctionMode):
    """Inside an RMSNorm's forward: normalise over the kept channels only, as the export does."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.idx = mask.nonzero().squeeze(1)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.rms_norm:
            return func(*args, **kwargs)
        bound = {**dict(zip(("input", "normalized_shape", "weight", "eps"), args)), **kwargs}
        x, idx = bound["input"], self.idx.to(bound["input"].device)
        kept = F.rms_norm(x.index_select(-1, idx), (len(idx),), kept_rows(bound.get("weight"), idx), bound.get("eps"))
        return torch.zeros_like(x).index_copy(-1, idx, kept)


class DynamicRMSNormMixin(DynamicChannelMixin):
    container_names = {"in_channels": "num_features", "out_channels": "num_features"}

    def _channel_counts(self) -> dict[str, int]:
        return {"num_features": self.normalized_shape[-1]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        with _KeptRMSNorm(mask):
            return super().forward(x)

    def to_static_op(self) -> nn.Module:
        idx = index_of(self.mask("out_channels"), self.normalized_shape[-1])
        params = {k: kept_rows(v, idx) for k, v in self._parameters.items()}
        return self._static_copy(params, {}, normalized_shape=(len(idx),))


class DynamicRMSNorm(DynamicRMSNormMixin, nn.RMSNorm):
    static_class = nn.RMSNorm


RMSNormKind.dynamic_ops = {nn.RMSNorm: DynamicRMSNorm}
MODELS.register_module(module=DynamicRMSNorm)
RMS_NORM = RMSNormKind()
