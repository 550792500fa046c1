"""Group norms (``nn.GroupNorm`` and ``F.group_norm`` with a GroupNorm's weight).

Channels: dim 1, input and output channels are one, and the same position in every group is
pruned together (each group keeps its size ratio). A pruned group norm normalises over the
kept channels only, in the masked model as in the export. No MACs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from ..trace.graph import Node
from .base import coupled, first_input, node_arg
from .norm_common import DynamicKeptChannelsNormMixin, NormKind

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


class GroupNormKind(NormKind):
    """The layer kind of ``nn.GroupNorm`` and ``F.group_norm`` with a GroupNorm's weight."""

    name = "group_norm"
    module_types = (nn.GroupNorm,)
    functions = ("group_norm",)
    owner_args = ((2, "weight"),)

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """Input and output channels are one along dim 1, the same position in every group pruned together."""
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
        """``num_channels`` on both sides."""
        return int(module.num_channels)


class DynamicGroupNormMixin(DynamicKeptChannelsNormMixin):
    """A group norm that normalises over the kept channels only (each group keeps the same positions)."""

    container_names = {"in_channels": "num_channels", "out_channels": "num_channels"}
    kept_norm = (F.group_norm, ("input", "num_groups", "weight", "bias", "eps"))
    channel_dim = 1

    def _norm_channels(self) -> int:
        return self.num_channels

    def _static_sizes(self, kept: int) -> dict[str, Any]:
        return {"num_channels": kept}


class DynamicGroupNorm(DynamicGroupNormMixin, nn.GroupNorm):
    """``nn.GroupNorm`` with a channel mask."""

    static_class = nn.GroupNorm


GroupNormKind.dynamic_ops = {nn.GroupNorm: DynamicGroupNorm}
MODELS.register_module(module=DynamicGroupNorm)
GROUP_NORM = GroupNormKind()
