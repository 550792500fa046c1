"""Convolutions (``nn.Conv1d/2d/3d`` and ``F.conv1d/2d/3d`` with a conv's weight).

Channels: a plain conv reads its input channels and writes fresh output channels; a depthwise
conv (``groups == in == out``) couples them; a grouped conv keeps the same positions in every
group. MACs: ``out positions * kept_out * kept_in / groups * kernel area`` (depthwise: the
groups follow the kept channels, so ``kept_in / groups = 1``).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..registry import MODELS
from ..trace.graph import Node, TensorRef
from .base import LayerGeometry, LayerKind, Term, first_input, group_union, positions, weights_along
from .derived_weights import derived_layer_rule, foreign_bias
from .dynamic_ops import DynamicChannelMixin, index_of, kept_rows, raw

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


def channel_dim(ref: TensorRef, batched_ndim: int) -> int:
    """The channel dim of a conv's input: 1 when batched (``batched_ndim`` dims), else 0."""
    return 1 if len(ref.shape) == batched_ndim else 0


def conv_like(ctx: AnalysisContext, name: str, x: TensorRef, out: TensorRef, spatial: int,
              in_channels: int, out_channels: int, groups: int) -> None:
    """The channel rule of a convolution (also used by the transposed one)."""
    dim = channel_dim(x, spatial + 2)
    ids_in = ctx.read(x, dim)
    if groups == 1:
        ids_out = ctx.fresh_layer_output(name, out_channels)
    elif groups == in_channels == out_channels:  # depthwise: each channel is its own group
        ids_out = ids_in
    else:  # grouped: the same position in every group is pruned together
        group_union(ctx, ids_in, groups)
        ids_out = ctx.fresh_layer_output(name, out_channels)
        group_union(ctx, ids_out, groups)
    ctx.slot(name, False, ids_in)
    ctx.slot(name, True, ids_out)
    ctx.write(out, dim, ids_out)


def is_depthwise(module: nn.Module) -> bool:
    """Whether a conv is depthwise (``groups == in_channels == out_channels`` > 1)."""
    return module.groups > 1 and module.groups == module.in_channels == module.out_channels


def conv_weight_terms(geo: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term:
    """Exported size of a conv's (or transposed conv's) weight or bias."""
    m = geo.module
    if attr == "bias":
        return Term(1, (geo.kept(True),))
    kernel = math.prod(shape[2:])
    if is_depthwise(m):
        return Term(kernel, (geo.kept(True),))
    return Term(kernel, (geo.kept(True), geo.kept(False)), m.groups)


class ConvKind(LayerKind):
    """The layer kind of ``nn.Conv1d/2d/3d`` and ``F.conv1d/2d/3d`` with a conv's weight."""

    name = "conv"
    weight_rows_are_outputs = True
    module_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    functions = ("conv1d", "conv2d", "conv3d")

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """A conv module's channel rule (:func:`conv_like`)."""
        m = node.target
        conv_like(ctx, node.name, first_input(node), node.output_refs()[0], len(m.kernel_size),
                  m.in_channels, m.out_channels, m.groups)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.conv*d`` with a conv's weight; a weight computed from stored ones goes to the
        derived-weight rule."""
        owner = self.function_owner(node, ctx.modules)
        x, out = first_input(node), node.output_refs()[0]

        def rule(name: str, m: nn.Module) -> None:
            conv_like(ctx, name, x, out, len(m.kernel_size), m.in_channels, m.out_channels, m.groups)

        if owner is None:  # a weight computed from stored ones (weight standardisation, re-param sums)
            return derived_layer_rule(ctx, node, self.module_types + self.family_types, rule)
        rule(owner.name, owner.module)
        foreign_bias(ctx, node, owner.name, ctx.get(out).reshape(-1))

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``out_channels`` or ``in_channels``."""
        return int(module.out_channels if is_output else module.in_channels)

    def macs(self, call: LayerGeometry) -> list[Term]:
        """``out positions * kernel area * kept_out * kept_in / groups`` (depthwise: ``* kept_out``)."""
        m = call.module
        factor = positions(call.output_shape, m.out_channels) * math.prod(m.kernel_size)
        if is_depthwise(m):
            return [Term(factor, (call.kept(True),))]
        return [Term(factor, (call.kept(True), call.kept(False)), m.groups)]

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """The exported size of the weight or bias (:func:`conv_weight_terms`)."""
        return conv_weight_terms(param, attr, shape)

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Weight and bias, whose dim 0 is the output channel."""
        return weights_along(module, 0, ("weight", "bias"))

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The weight with its input channels first (none for a grouped conv)."""
        return {} if module.groups != 1 else weights_along(module, 1, ("weight",))

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """The dim before the spatial dims (:func:`spatial_channel_dim`)."""
        return spatial_channel_dim(module, output)


def spatial_channel_dim(module: nn.Module, output: Any) -> int | None:
    """The channel dim of a (transposed) conv's output: before its spatial dims (unbatched too)."""
    if not isinstance(output, torch.Tensor) or output.dim() < len(module.kernel_size) + 1:
        return None
    return output.dim() - len(module.kernel_size) - 1


# -- the dynamic op -------------------------------------------------------------------------------
class DynamicConvMixin(DynamicChannelMixin):
    """A conv whose channels follow masks: ``weight`` and ``bias`` read masked; the export keeps the
    kept ones."""

    def _channel_counts(self) -> dict[str, int]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels}

    def _weight_mask(self, w: torch.Tensor) -> torch.Tensor | None:
        """Rows of the weight are output channels, its columns a group's input channels."""
        return grouped_weight_mask(w, self.mask("out_channels"), self.mask("in_channels"), self.in_channels)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The original forward. A conv with a forward of its own (not depthwise, not transposed)
        with pruned input channels runs as its export runs: on the kept input channels with the
        weight's kept columns, so a weight computed in that forward (standardised over its inputs)
        is computed over the kept ones; pruned output channels are zeroed after it. A plain conv
        reads the masked weight (pruned columns zero) at full width."""
        m_in = self.mask("in_channels") if "mutable_attrs" in self._modules else None
        if m_in is None or not _own_forward(self) or self.transposed or is_depthwise(self):
            return super().forward(x, *args, **kwargs)
        dim = channel_dim(x, len(self.kernel_size) + 2)
        kept = m_in.nonzero().squeeze(1).to(x.device)
        self.__dict__["_kept_columns"] = group_positions(m_in, self.groups, self.in_channels).to(x.device)
        try:
            out = super().forward(x.index_select(dim, kept), *args, **kwargs)
        finally:
            del self.__dict__["_kept_columns"]
        m_out = self.mask("out_channels")
        if m_out is None:
            return out
        shape = [1] * out.dim()
        shape[dim] = -1
        return out * m_out.view(shape).to(device=out.device, dtype=out.dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The weight with pruned output channels and (per group) input channels zeroed (inside a
        forward on the kept inputs: the kept columns, every row)."""
        w = raw(self, "weight")
        columns = self.__dict__.get("_kept_columns")
        if columns is not None:
            return w.index_select(1, columns)
        mask = self._weight_mask(w) if "mutable_attrs" in self._modules else None
        return w if mask is None else w * mask

    @property
    def bias(self) -> torch.Tensor | None:
        """The bias with pruned output channels zeroed (None without a bias; inside a forward on the
        kept inputs: as stored, the output is masked after)."""
        b = raw(self, "bias")
        if "_kept_columns" in self.__dict__:
            return b
        m_out = self.mask("out_channels") if b is not None and "mutable_attrs" in self._modules else None
        return b if m_out is None else b * m_out.to(device=b.device, dtype=b.dtype)

    def to_static_op(self) -> nn.Module:
        """A plain conv of the kept channels (depthwise and grouped convs keep their grouping)."""
        w, b = raw(self, "weight"), raw(self, "bias")
        m_in, m_out = self.mask("in_channels"), self.mask("out_channels")
        out_idx = index_of(m_out, self.out_channels)
        groups = self.groups
        if groups == 1:
            in_idx = index_of(m_in, self.in_channels)
            weight = kept_rows(w, out_idx)[:, in_idx.to(w.device)]
            new_in, new_groups = len(in_idx), 1
        elif groups == self.in_channels == self.out_channels:
            in_idx = index_of(m_in, self.in_channels)
            if not torch.equal(in_idx, out_idx):
                raise RuntimeError(f"depthwise {type(self).__name__}: input and output masks differ")
            weight, new_in, new_groups = kept_rows(w, out_idx), len(out_idx), len(out_idx)
        else:
            pos = group_positions(m_in, groups, self.in_channels)
            group_positions(m_out, groups, self.out_channels)
            weight = kept_rows(w, out_idx)[:, pos.to(w.device)]
            new_in, new_groups = groups * len(pos), groups
        return self._static_copy({"weight": weight, "bias": kept_rows(b, out_idx)}, {},
                                 in_channels=new_in, out_channels=len(out_idx), groups=new_groups)


def _own_forward(module: nn.Module) -> bool:
    """Whether a (dynamic) conv's static class has a forward of its own (a subclass of a torch conv)."""
    static = getattr(module, "static_class", type(module))
    return isinstance(module, nn.modules.conv._ConvNd) and static.forward not in (
        nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.ConvTranspose1d.forward,
        nn.ConvTranspose2d.forward, nn.ConvTranspose3d.forward)


def grouped_weight_mask(w: torch.Tensor, row_mask: torch.Tensor | None, column_mask: torch.Tensor | None,
                        column_channels: int) -> torch.Tensor | None:
    """The 0/1 mask of a grouped layer's weight ``[rows, columns of one group, *kernel]``: a row
    keeps the columns of its group that ``column_mask`` keeps (``column_channels`` in all groups),
    if ``row_mask`` keeps the row. None when neither side is masked."""
    if row_mask is None and column_mask is None:
        return None
    rows, per_group = w.shape[0], w.shape[1]
    groups = column_channels // per_group
    row_mask = torch.ones(rows, dtype=torch.bool) if row_mask is None else row_mask
    column_mask = torch.ones(column_channels, dtype=torch.bool) if column_mask is None else column_mask
    per_row = column_mask.view(groups, per_group).repeat_interleave(rows // groups, dim=0)
    mask = per_row & row_mask.unsqueeze(1)
    return mask.view(*mask.shape, *([1] * (w.dim() - 2))).to(device=w.device, dtype=w.dtype)


def group_positions(mask: torch.Tensor | None, groups: int, n: int) -> torch.Tensor:
    """Kept positions inside a group; every group must keep the same ones."""
    if mask is None:
        return torch.arange(n // groups)
    blocks = mask.view(groups, -1)
    if not bool((blocks == blocks[:1]).all()):
        raise RuntimeError("a grouped layer's mask must keep the same positions in every group")
    return blocks[0].nonzero().squeeze(1)


class DynamicConv1d(DynamicConvMixin, nn.Conv1d):
    """``nn.Conv1d`` with channel masks."""

    static_class = nn.Conv1d


class DynamicConv2d(DynamicConvMixin, nn.Conv2d):
    """``nn.Conv2d`` with channel masks."""

    static_class = nn.Conv2d


class DynamicConv3d(DynamicConvMixin, nn.Conv3d):
    """``nn.Conv3d`` with channel masks."""

    static_class = nn.Conv3d


ConvKind.dynamic_ops = {nn.Conv1d: DynamicConv1d, nn.Conv2d: DynamicConv2d, nn.Conv3d: DynamicConv3d}
for _cls in ConvKind.dynamic_ops.values():
    MODELS.register_module(module=_cls)
CONV = ConvKind()
