"""Parametric ReLUs (``nn.PReLU`` and ``F.prelu``): one slope, or one slope per channel.

Channels: along dim 1 (dim 0 for an input of one dim); with one slope per channel, input and
output channels are one and the slope keeps the kept channels; with one slope for all, the op
is elementwise (no slot, nothing pruned in it). ``F.prelu`` with a slope that no ``nn.PReLU``
owns: the slope's entries join the channels (a parameter slot, sliced by the export). No MACs
(``FlopCounterMode`` counts none: docs/counting.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..channels.channel_space import varying_dims
from ..registry import MODELS
from ..trace.graph import Node, TensorRef
from .base import LayerGeometry, LayerKind, Term, coupled, first_input, node_arg, raw_param
from .dynamic_ops import DynamicChannelMixin, index_of, kept_rows

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


def slope_dim(x: TensorRef) -> int:
    """The dim a PReLU's slopes run along: 1, or 0 for an input of one dim."""
    return 1 if len(x.shape) >= 2 else 0


def _elementwise(ctx: AnalysisContext, x: TensorRef, out: TensorRef) -> None:
    ctx.set(out, ctx.get(x))


def _unowned_prelu(ctx: AnalysisContext, node: Node, x: TensorRef, weight: Any) -> None:
    """``F.prelu(x, w)`` with ``w`` no PReLU module owns: ``w``'s entries are the channels'."""
    out, dim = node.output_refs()[0], slope_dim(x)
    if not isinstance(weight, TensorRef) or len(weight.shape) != 1:
        return ctx.unknown(node)
    if weight.shape[0] == 1:
        return _elementwise(ctx, x, out)
    if weight.shape[0] != x.shape[dim]:
        return ctx.unknown(node)
    line = ctx.read(x, dim)
    ids = ctx.get(weight, along=0)
    if set(varying_dims(ids)) - {0}:
        return ctx.unknown(node)
    ctx.space.union(ids.expand(weight.shape[0]).reshape(-1), line)
    ctx.write(out, dim, line)
    return None


class PReLUKind(LayerKind):
    """The layer kind of ``nn.PReLU`` and ``F.prelu``."""

    name = "prelu"
    module_types = (nn.PReLU,)
    functions = ("prelu",)
    owner_args = ((1, "weight"),)
    has_macs = False

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """One slope: elementwise; one per channel: input and output channels are one (dim 1)."""
        self._rule(ctx, node, node.name, node.target)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.prelu(x, weight)`` with a PReLU's slopes (as the module), or with any other
        parameter (its entries join the channels)."""
        owner = self.function_owner(node, ctx.modules)
        x = first_input(node)
        if owner is None:
            return _unowned_prelu(ctx, node, x, node_arg(node, 1, "weight"))
        return self._rule(ctx, node, owner.name, owner.module)

    def _rule(self, ctx: AnalysisContext, node: Node, name: str, module: nn.Module) -> None:
        x, out = first_input(node), node.output_refs()[0]
        if module.num_parameters == 1:
            return _elementwise(ctx, x, out)
        if x.shape[slope_dim(x)] != module.num_parameters:
            return ctx.unknown(node)
        coupled(ctx, name, x, out, slope_dim(x))
        return None

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``num_parameters`` on both sides."""
        return int(module.num_parameters)

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """Per-channel slopes keep the kept channels; one slope is counted whole."""
        return Term(1, (param.kept(True),)) if shape != (1,) else None

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The per-channel slopes."""
        weight = raw_param(module, "weight")
        return {"weight": weight} if weight is not None and weight.numel() > 1 else {}

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The same slopes: input and output channels are one."""
        return self.output_channel_weights(module)

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """Dim 1 of a batched output."""
        return 1 if isinstance(output, torch.Tensor) and output.dim() > 1 else None


class DynamicPReLUMixin(DynamicChannelMixin):
    """A PReLU whose pruned channels output zero; its export keeps the kept slopes."""

    container_names = {"in_channels": "num_parameters", "out_channels": "num_parameters"}

    def _channel_counts(self) -> dict[str, int]:
        return {"num_parameters": self.num_parameters}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original forward, with the pruned channels of the output zeroed."""
        out = super().forward(x)
        mask = self.mask("out_channels")
        if mask is None:
            return out
        shape = [1] * out.dim()
        shape[1 if out.dim() >= 2 else 0] = -1
        return out * mask.view(shape).to(device=out.device, dtype=out.dtype)

    def to_static_op(self) -> nn.Module:
        """A plain PReLU of the kept slopes."""
        idx = index_of(self.mask("out_channels"), self.num_parameters)
        return self._static_copy({"weight": kept_rows(self._parameters["weight"], idx)}, {},
                                 num_parameters=len(idx))


class DynamicPReLU(DynamicPReLUMixin, nn.PReLU):
    """``nn.PReLU`` with a channel mask."""

    static_class = nn.PReLU


PReLUKind.dynamic_ops = {nn.PReLU: DynamicPReLU}
MODELS.register_module(module=DynamicPReLU)
PRELU = PReLUKind()
