"""Group norms (``nn.GroupNorm`` and ``F.group_norm`` with a GroupNorm's weight).

Channels: dim 1, input and output channels are one, and the same position in every group is
pruned together (each group keeps its size ratio). A pruned group norm normalises over the
kept channels only, in the masked model as in the export. No MACs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..dynamic_ops import DynamicChannelMixin, index_of, kept_rows
from ..registry import MODELS
from ..tracing import Node
from .base import LayerGeometry, LayerKind, Term, coupled, first_input, node_arg
from .batch_norm import norm_param_size, per_channel_weights
from .layer_norm import KeptChannelsNorm

if TYPE_CHECKING:
    from ..analysis import AnalysisContext


class GroupNormKind(LayerKind):
    name = "group_norm"
    has_macs = False
    module_types = (nn.GroupNorm,)
    functions = ("group_norm",)
    owner_args = ((2, "weight"),)

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        coupled(ctx, node.name, first_input(node), node.output_refs()[0], 1, groups=node.target.num_groups)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.group_norm(x, num_groups, weight, bias, eps)`` with the module's own group count."""
        owner = self.function_owner(node, ctx.modules)
        x = first_input(node)
        groups = node_arg(node, 1, "num_groups")
        if (owner is None or len(x.shape) < 2 or x.shape[1] != owner.module.num_channels
                or groups != owner.module.num_groups):
            return ctx.unknown(node)
        coupled(ctx, owner.name, x, node.output_refs()[0], 1, groups=groups)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        return int(module.num_channels)

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        return norm_param_size(param, shape)

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return per_channel_weights(module)

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return per_channel_weights(module)

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        return 1 if isinstance(output, torch.Tensor) and output.dim() >= 2 else None


class DynamicGroupNormMixin(DynamicChannelMixin):
    container_names = {"in_channels": "num_channels", "out_channels": "num_channels"}

    def _channel_counts(self) -> dict[str, int]:
        return {"num_channels": self.num_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        names = ("input", "num_groups", "weight", "bias", "eps")
        with KeptChannelsNorm(mask, F.group_norm, names, dim=1):  # also inside a subclass's own forward
            return super().forward(x)

    def to_static_op(self) -> nn.Module:
        idx = index_of(self.mask("out_channels"), self.num_channels)
        params = {k: kept_rows(v, idx) for k, v in self._parameters.items()}
        return self._static_copy(params, {}, num_channels=len(idx))


class DynamicGroupNorm(DynamicGroupNormMixin, nn.GroupNorm):
    static_class = nn.GroupNorm


GroupNormKind.dynamic_ops = {nn.GroupNorm: DynamicGroupNorm}
MODELS.register_module(module=DynamicGroupNorm)
GROUP_NORM = GroupNormKind()
