"""Transposed convolutions (``nn.ConvTranspose1d/2d/3d`` and ``F.conv_transpose1d/2d/3d`` with
such a layer's weight), with groups, output_padding and dilation.

The weight is ``(in, out / groups, *kernel)``: input channels on dim 0. Channels: as a conv
(fresh outputs; depthwise couples both sides; grouped keeps the same positions in every
group). MACs, as FlopCounterMode counts them: ``input positions * kept_in * kept_out / groups
* kernel area`` (each input element is scattered through the whole kernel).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..registry import MODELS
from ..trace.graph import Node
from .base import LayerGeometry, LayerKind, Term, first_input, node_arg, positions, weights_along
from .conv import (
    DynamicConvMixin,
    conv_like,
    conv_weight_terms,
    group_positions,
    grouped_weight_mask,
    is_depthwise,
    spatial_channel_dim,
)
from .dynamic_ops import index_of, kept_rows, raw

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


class ConvTransposeKind(LayerKind):
    """The layer kind of ``nn.ConvTranspose1d/2d/3d`` and ``F.conv_transpose1d/2d/3d`` with such a
    layer's weight."""

    name = "conv_transpose"
    module_types = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    functions = ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """A transposed conv module's channel rule (the conv's: :func:`conv_like`)."""
        m = node.target
        conv_like(ctx, node.name, first_input(node), node.output_refs()[0], len(m.kernel_size),
                  m.in_channels, m.out_channels, m.groups)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, ...)``
        with a layer's weight and its group count."""
        owner = self.function_owner(node, ctx.modules)
        if owner is None or owner.attr != "weight" or node_arg(node, 6, "groups", 1) != owner.module.groups:
            return ctx.unknown(node)
        m = owner.module
        conv_like(ctx, owner.name, first_input(node), node.output_refs()[0], len(m.kernel_size),
                  m.in_channels, m.out_channels, m.groups)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``out_channels`` or ``in_channels``."""
        return int(module.out_channels if is_output else module.in_channels)

    def macs(self, call: LayerGeometry) -> list[Term]:
        """``in positions * kernel area * kept_in * kept_out / groups`` (each input element is
        scattered through the kernel)."""
        m = call.module
        factor = positions(call.input_shapes[0], m.in_channels) * math.prod(m.kernel_size)
        if is_depthwise(m):
            return [Term(factor, (call.kept(True),))]
        return [Term(factor, (call.kept(False), call.kept(True)), m.groups)]

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """The exported size of the weight or bias (as a conv's: :func:`conv_weight_terms`)."""
        return conv_weight_terms(param, attr, shape)

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The bias, and the weight with its output channels (dim 1) first unless grouped."""
        found = weights_along(module, 0, ("bias",))
        if module.groups == 1:
            found.update(weights_along(module, 1, ("weight",)))
        return found

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The weight, whose dim 0 is the input channel."""
        return weights_along(module, 0, ("weight",))

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """The dim before the spatial dims (:func:`spatial_channel_dim`)."""
        return spatial_channel_dim(module, output)


class DynamicConvTransposeMixin(DynamicConvMixin):
    """A transposed conv whose input and output channels follow masks: its weight holds the
    input channels in rows and a group's output channels in columns."""

    def _weight_mask(self, w: torch.Tensor) -> torch.Tensor | None:
        return grouped_weight_mask(w, self.mask("in_channels"), self.mask("out_channels"), self.out_channels)

    def to_static_op(self) -> nn.Module:
        """A plain transposed conv of the kept channels (depthwise and grouped ones keep their grouping)."""
        w, b = raw(self, "weight"), raw(self, "bias")
        m_in, m_out = self.mask("in_channels"), self.mask("out_channels")
        in_idx = index_of(m_in, self.in_channels)
        out_idx = index_of(m_out, self.out_channels)
        groups = self.groups
        if groups == 1:
            weight = kept_rows(w, in_idx)[:, out_idx.to(w.device)]
            new_groups = 1
        elif is_depthwise(self):
            if not torch.equal(in_idx, out_idx):
                raise RuntimeError(f"depthwise {type(self).__name__}: input and output masks differ")
            weight, new_groups = kept_rows(w, in_idx), len(in_idx)
        else:
            group_positions(m_in, groups, self.in_channels)
            pos = group_positions(m_out, groups, self.out_channels)
            weight, new_groups = kept_rows(w, in_idx)[:, pos.to(w.device)], groups
        return self._static_copy({"weight": weight, "bias": kept_rows(b, out_idx)}, {},
                                 in_channels=len(in_idx), out_channels=len(out_idx), groups=new_groups)


class DynamicConvTranspose1d(DynamicConvTransposeMixin, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with channel masks."""

    static_class = nn.ConvTranspose1d


class DynamicConvTranspose2d(DynamicConvTransposeMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with channel masks."""

    static_class = nn.ConvTranspose2d


class DynamicConvTranspose3d(DynamicConvTransposeMixin, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with channel masks."""

    static_class = nn.ConvTranspose3d


ConvTransposeKind.dynamic_ops = {nn.ConvTranspose1d: DynamicConvTranspose1d, nn.ConvTranspose2d: DynamicConvTranspose2d,
                                 nn.ConvTranspose3d: DynamicConvTranspose3d}
for _cls in ConvTransposeKind.dynamic_ops.values():
    MODELS.register_module(module=_cls)
CONV_TRANSPOSE = ConvTransposeKind()
