"""Layer norms over one dim (``nn.LayerNorm`` and ``F.layer_norm`` with a LayerNorm's weight).

Channels: the normalised last dim; input and output channels are one. A pruned layer norm
normalises over the kept channels only, in the masked model as in the export. No MACs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from ..trace.graph import Node
from .base import coupled, first_input, node_arg
from .norm_common import DynamicKeptChannelsNormMixin, NormKind

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


class LayerNormKind(NormKind):
    """The layer kind of ``nn.LayerNorm`` and ``F.layer_norm`` with a LayerNorm's weight (over one dim)."""

    name = "layer_norm"
    channel_dim = -1  # the normalised last dim
    module_types = (nn.LayerNorm,)
    functions = ("layer_norm",)
    owner_args = ((2, "weight"),)

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """Input and output channels are one along the last dim (no rule for a norm over several dims)."""
        if len(node.target.normalized_shape) != 1:
            return ctx.unknown(node)
        coupled(ctx, node.name, first_input(node), node.output_refs()[0], -1)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.layer_norm`` with a LayerNorm's weight over one dim: as the module."""
        owner = self.function_owner(node, ctx.modules)
        shape = node_arg(node, 1, "normalized_shape")
        if owner is None or len(shape) != 1:
            return ctx.unknown(node)
        coupled(ctx, owner.name, first_input(node), node.output_refs()[0], -1)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """The normalised size (``normalized_shape[-1]``) on both sides."""
        return int(module.normalized_shape[-1])


class DynamicLayerNormMixin(DynamicKeptChannelsNormMixin):
    """A norm over the last dim that keeps only the masked channels (``nn.LayerNorm``, and
    ``nn.RMSNorm`` with its own functional norm)."""

    container_names = {"in_channels": "num_features", "out_channels": "num_features"}
    kept_norm = (F.layer_norm, ("input", "normalized_shape", "weight", "bias", "eps"))  # function, its arguments

    def _norm_channels(self) -> int:
        return self.normalized_shape[-1]

    def _static_sizes(self, kept: int) -> dict[str, Any]:
        return {"normalized_shape": (kept,)}


class DynamicLayerNorm(DynamicLayerNormMixin, nn.LayerNorm):
    """``nn.LayerNorm`` with a channel mask."""

    static_class = nn.LayerNorm


LayerNormKind.dynamic_ops = {nn.LayerNorm: DynamicLayerNorm}
MODELS.register_module(module=DynamicLayerNorm)
LAYER_NORM = LayerNormKind()


# -- torch's fused encoder path ------------------------------------------------------------------
class FusedPathGuard:
    """A forward pre-hook on the prepared model: while a layer norm inside an
    ``nn.TransformerEncoderLayer`` keeps only some channels, torch's fused encoder path (eval, no
    grad) would normalise over all of them, bypassing the masked layer norm; the guard turns that
    path off for the forward (the export, with smaller plain layer norms, may use it). At full
    choices it does nothing, so the model computes exactly what it did."""

    def __init__(self, norms: list[DynamicLayerNormMixin]) -> None:
        self.norms = norms
        self.saved: list[bool] = []

    def __call__(self, module: nn.Module, args: Any) -> None:
        self.saved.append(torch.backends.mha.get_fastpath_enabled())
        if any(norm.mask("out_channels") is not None for norm in self.norms):
            torch.backends.mha.set_fastpath_enabled(False)

    def restore(self, module: nn.Module, args: Any, output: Any) -> None:
        """The forward hook: put the fused path setting back as it was before the forward."""
        if self.saved:
            torch.backends.mha.set_fastpath_enabled(self.saved.pop())


def guard_fused_paths(model: nn.Module) -> None:
    """Install :class:`FusedPathGuard` on ``model`` when an encoder layer below it (not the model
    itself: a hook on the layer would turn its fused path off at full choices too) holds a
    dynamic layer norm."""
    norms = [norm for name, layer in model.named_modules() if name and isinstance(layer, nn.TransformerEncoderLayer)
             for norm in layer.modules() if isinstance(norm, DynamicLayerNormMixin)]
    if norms:
        guard = FusedPathGuard(norms)
        model.register_forward_pre_hook(guard)
        model.register_forward_hook(guard.restore, always_call=True)


def remove_fused_path_guards(model: nn.Module) -> None:
    """Take the guards off a copy of the model (the export is plain torch)."""
    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for key in [k for k, hook in hooks.items() if isinstance(getattr(hook, "__self__", hook), FusedPathGuard)]:
            del hooks[key]
