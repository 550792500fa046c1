"""Bilinear layers (``nn.Bilinear``): ``y[o] = x1 W[o] x2 + b[o]``, weight ``[out, in1, in2]``.

Two input sides in one weight. Channels: reads the last dim of both inputs, writes fresh output
features. The output side and the first input side are the layer's own sides (``out_features``,
``in1_features``); the second input side is a parameter slot of the weight along dim 2 (a
reader like any other: it may hold another unit than the first side, or the same one). The masked
layer reads its weight masked on all three dims (pruned inputs ignored, pruned outputs zero);
the export keeps the kept entries of all three dims. MACs: ``rows *
kept_out * kept_in1 * kept_in2`` (every weight entry once per row: docs/counting.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from ..trace.graph import Node, TensorRef
from .base import LayerGeometry, LayerKind, Term, node_arg, weights_along
from .dynamic_ops import DynamicChannelMixin, index_of, kept_rows, raw

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


class BilinearKind(LayerKind):
    """The layer kind of ``nn.Bilinear``."""

    name = "bilinear"
    module_types = (nn.Bilinear,)
    masks_param_slots = True  # its second input side is a parameter slot, read masked
    sizes_param_slots = True  # its weight's size is the kind's formula (three sides), not the slot's alone
    weight_rows_are_outputs = True

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """Reads the last dim of both inputs (the second as the weight's dim 2), writes fresh outputs."""
        x1, x2 = node_arg(node, 0, "input1"), node_arg(node, 1, "input2")
        module, out = node.target, node.output_refs()[0]
        if not isinstance(x1, TensorRef) or not isinstance(x2, TensorRef) or not x1.shape or not x2.shape \
                or x1.shape[:-1] != x2.shape[:-1]:
            return ctx.unknown(node, "a bilinear layer of inputs with different leading dims")
        ids1, ids2 = ctx.read(x1, -1), ctx.read(x2, -1)
        ids_out = ctx.fresh_layer_output(node.name, module.out_features)
        ctx.slot(node.name, False, ids1)
        ctx.slot(node.name, True, ids_out)
        ctx.slot(f"{node.name}.weight", False, ids2, param_dim=2)
        ctx.layer_params.add(f"{node.name}.weight")
        ctx.write(out, -1, ids_out)
        return None

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``out_features`` or ``in1_features`` (the second input is the weight's dim 2)."""
        return int(module.out_features if is_output else module.in1_features)

    def macs(self, call: LayerGeometry) -> list[Term]:
        """Rows (every leading dim) times every kept weight entry."""
        rows = tuple(call.kept_output_dim(d) for d in range(len(call.output_shape) - 1))
        in2 = call.kept_param_dim("weight", 2, call.module.in2_features)
        return [Term(1, (*rows, call.kept(True), call.kept(False), in2))]

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """Weight: the product of the three kept sides; bias: the kept outputs."""
        if attr == "weight":
            return Term(1, (param.kept(True), param.kept(False), param.kept_param_dim("weight", 2, shape[2])))
        return Term(1, (param.kept(True),)) if attr == "bias" else None

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The weight with its output features first, and the bias."""
        return weights_along(module, 0, ("weight", "bias"))

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The weight with its first input's features first."""
        return weights_along(module, 1, ("weight",))

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """The last dim."""
        return -1 if isinstance(output, torch.Tensor) else None


class DynamicBilinearMixin(DynamicChannelMixin):
    """A bilinear layer whose weight reads masked along its three dims."""

    container_names = {"in_channels": "in1_features", "out_channels": "out_features"}

    def _channel_counts(self) -> dict[str, int]:
        return {"in1_features": self.in1_features, "out_features": self.out_features}

    def _init_mutable_attrs(self, *args: Any) -> None:
        super()._init_mutable_attrs(*args)
        self.__dict__["_second_input"] = []

    def add_param_channel(self, attr: str, dim: int, unit: Any, channel: Any) -> None:
        """Let ``channel`` of ``unit`` mask the second input (the weight's dim 2)."""
        if (attr, dim) != ("weight", 2):
            raise ValueError(f"a bilinear layer's parameter slots are its weight's dim 2, not {attr!r} dim {dim}")
        self.__dict__["_second_input"].append((unit, channel))

    def second_input_mask(self) -> torch.Tensor | None:
        """The kept features of the second input, or None while all are kept."""
        mask = torch.ones(self.in2_features, dtype=torch.bool)
        for unit, channel in self.__dict__.get("_second_input", []):
            mask[channel.start:channel.end] = unit.channel_mask(channel)
        return None if bool(mask.all()) else mask

    def forward(self, input1: torch.Tensor, input2: torch.Tensor) -> torch.Tensor:
        """The original forward; with partial masks, the weight (and bias) masked on every side."""
        masks = (self.mask("out_channels"), self.mask("in_channels"), self.second_input_mask())
        if all(m is None for m in masks):
            return super().forward(input1, input2)
        weight, bias = raw(self, "weight"), raw(self, "bias")
        for dim, mask in enumerate(masks):
            if mask is not None:
                shape = [1, 1, 1]
                shape[dim] = -1
                weight = weight * mask.view(shape).to(device=weight.device, dtype=weight.dtype)
        if bias is not None and masks[0] is not None:
            bias = bias * masks[0].to(device=bias.device, dtype=bias.dtype)
        return F.bilinear(input1, input2, weight, bias)

    def to_static_op(self) -> nn.Module:
        """A plain ``nn.Bilinear`` of the kept outputs, first and second inputs."""
        w, b = raw(self, "weight"), raw(self, "bias")
        out_idx = index_of(self.mask("out_channels"), self.out_features)
        in_idx = index_of(self.mask("in_channels"), self.in1_features)
        in2_idx = index_of(self.second_input_mask(), self.in2_features)
        weight = kept_rows(kept_rows(kept_rows(w, out_idx), in_idx, 1), in2_idx, 2)
        static = self._static_copy({"weight": weight, "bias": kept_rows(b, out_idx)}, {},
                                   in1_features=len(in_idx), out_features=len(out_idx), in2_features=len(in2_idx))
        static.__dict__.pop("_second_input", None)
        return static


class DynamicBilinear(DynamicBilinearMixin, nn.Bilinear):
    """``nn.Bilinear`` with feature masks on its three sides."""

    static_class = nn.Bilinear


BilinearKind.dynamic_ops = {nn.Bilinear: DynamicBilinear}
MODELS.register_module(module=DynamicBilinear)
BILINEAR = BilinearKind()
