"""Layer norms over one dim (``nn.LayerNorm`` and ``F.layer_norm`` with a LayerNorm's weight).

Channels: the normalised last dim; input and output channels are one. A pruned layer norm
normalises over the kept channels only, in the masked model as in the export. No MACs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..dynamic_ops import DynamicChannelMixin, index_of, kept_rows
from ..registry import MODELS
from ..tracing import Node
from .base import LayerGeometry, LayerKind, Term, coupled, first_input, node_arg
from .batch_norm import norm_param_size, per_channel_weights

if TYPE_CHECKING:
    from ..analysis import AnalysisContext


class LayerNormKind(LayerKind):
    name = "layer_norm"
    has_macs = False
    module_types = (nn.LayerNorm,)
    functions = ("layer_norm",)
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

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        return -1 if isinstance(output, torch.Tensor) else None  # normalises the last dim


class _KeptLayerNorm(TorchFunctionMode):
    """Inside a LayerNorm's forward: normalise over the kept channels only, as the export does."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.idx = mask.nonzero().squeeze(1)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.layer_norm:
            return func(*args, **kwargs)
        names = ("input", "normalized_shape", "weight", "bias", "eps")
        bound = {**dict(zip(names, args)), **kwargs}
        x, idx = bound["input"], self.idx.to(bound["input"].device)
        out = torch.zeros_like(x)
        kept = F.layer_norm(x.index_select(-1, idx), (len(idx),), kept_rows(bound.get("weight"), idx),
                            kept_rows(bound.get("bias"), idx), bound.get("eps", 1e-5))
        return out.index_copy(-1, idx, kept)


class DynamicLayerNormMixin(DynamicChannelMixin):
    container_names = {"in_channels": "num_features", "out_channels": "num_features"}

    def _channel_counts(self) -> dict[str, int]:
        return {"num_features": self.normalized_shape[-1]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        with _KeptLayerNorm(mask):
            return super().forward(x)

    def to_static_op(self) -> nn.Module:
        idx = index_of(self.mask("out_channels"), self.normalized_shape[-1])
        params = {k: kept_rows(v, idx) for k, v in self._parameters.items()}
        return self._static_copy(params, {}, normalized_shape=(len(idx),))


class DynamicLayerNorm(DynamicLayerNormMixin, nn.LayerNorm):
    static_class = nn.LayerNorm


LayerNormKind.dynamic_ops = {nn.LayerNorm: DynamicLayerNorm}
MODELS.register_module(module=DynamicLayerNorm)
LAYER_NORM = LayerNormKind()
