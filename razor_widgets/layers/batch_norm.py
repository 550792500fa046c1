"""Batch and instance norms (``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``, ``nn.InstanceNorm1d/2d/3d``, and
``F.batch_norm`` / ``F.instance_norm`` called with such a module's parameters or buffers, as
fused norm+activation modules do from their own forward).

Channels: per channel, so input and output channels are one. No MACs (docs/counting.md);
each 1-D parameter keeps the kept channels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..channels.channel_space import varying_dims
from ..registry import MODELS
from ..trace.graph import Node, TensorRef
from .base import coupled, first_input, node_arg, raw_param
from .dynamic_ops import DynamicChannelMixin, index_of, kept_rows
from .norm_common import NormKind, kept_parameters

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


def unowned_norm(ctx: AnalysisContext, node: Node) -> None:
    """``F.batch_norm`` / ``F.instance_norm`` with no running statistics of a norm module, as
    weight standardisation uses it on a conv's weight (``ScaledStdConv2d``): per channel along
    dim 1, with statistics over the other dims, which must hold no channels. Its affine weight and
    bias (per channel, possibly computed from parameters) share the channels."""
    x, out = first_input(node), node.output_refs()[0]
    stats = [node_arg(node, i, key) for i, key in ((1, "running_mean"), (2, "running_var"))]
    if len(x.shape) < 2 or set(varying_dims(ctx.get(x))) - {1} or any(s is not None for s in stats):
        return ctx.unknown(node)
    line = ctx.read(x, 1)
    for index, key in ((3, "weight"), (4, "bias")):
        ref = node_arg(node, index, key)
        ids = ctx.get(ref) if isinstance(ref, TensorRef) else None
        if ids is not None and ids.shape[0] == line.numel() and set(varying_dims(ids)) <= {0}:
            ctx.space.union(ids.reshape(-1), line)
        elif ids is not None:
            return ctx.unknown(node)
    ctx.write(out, 1, line)
    return None


class BatchNormKind(NormKind):
    """The layer kind of batch and instance norms (``nn.BatchNorm*d``, ``nn.InstanceNorm*d``,
    ``F.batch_norm``, ``F.instance_norm``)."""

    name = "batch_norm"
    module_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.SyncBatchNorm)
    family_types = (nn.modules.batchnorm._NormBase,)
    functions = ("batch_norm", "instance_norm")
    owner_args = ((3, "weight"), (1, "running_mean"))

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """Input and output channels are the same, along dim 1 (dim 0 for an unbatched input)."""
        m = node.target
        x, out = first_input(node), node.output_refs()[0]
        spatial = {nn.BatchNorm1d: 1, nn.InstanceNorm1d: 1}.get(type(m), None)
        batched = (spatial or (3 if isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d)) else 2)) + 2
        any_rank = isinstance(m, (nn.BatchNorm1d, nn.SyncBatchNorm))  # (N, C, *): channels on dim 1
        dim = 1 if len(x.shape) >= 2 and (len(x.shape) == batched or any_rank) else 0
        coupled(ctx, node.name, x, out, dim)

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.batch_norm(x, running_mean, running_var, weight, bias, ...)`` (and instance norm):
        the channel dim is 1 and must hold the module's channels."""
        owner = self.function_owner(node, ctx.modules)
        x = first_input(node)
        if owner is None:
            return unowned_norm(ctx, node)
        if len(x.shape) < 2 or x.shape[1] != owner.module.num_features:
            return ctx.unknown(node)
        coupled(ctx, owner.name, x, node.output_refs()[0], 1)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``num_features`` on both sides."""
        return int(module.num_features)

    def channel_scale(self, module: nn.Module) -> torch.Tensor | None:
        """The affine weight (gamma), which Network Slimming ranks channels by."""
        return raw_param(module, "weight")  # gamma; None without affine parameters


class DynamicNormMixin(DynamicChannelMixin):
    """Per-channel norms (batch and instance norm): pruned channels output zero."""

    container_names = {"in_channels": "num_features", "out_channels": "num_features"}
    channel_attr = "num_features"

    def _channel_counts(self) -> dict[str, int]:
        return {"num_features": getattr(self, self.channel_attr)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original forward, with the pruned channels of the output zeroed."""
        out = super().forward(x)
        mask = self.mask("out_channels")
        if mask is None:
            return out
        dim = 1 if x.dim() > 1 and not (x.dim() == self._unbatched_ndim()) else 0
        shape = [1] * out.dim()
        shape[dim] = -1
        return out * mask.view(shape).to(device=out.device, dtype=out.dtype)

    def _unbatched_ndim(self) -> int:
        return -1

    def to_static_op(self) -> nn.Module:
        """A plain norm of the kept channels (affine parameters and running statistics cut to them)."""
        idx = index_of(self.mask("out_channels"), getattr(self, self.channel_attr))
        params = kept_parameters(self, idx)
        buffers = {k: (kept_rows(v, idx) if v is not None and v.dim() > 0 else v)
                   for k, v in self._buffers.items()}
        return self._static_copy(params, buffers, **{self.channel_attr: len(idx)})


class _BatchNormMixin(DynamicNormMixin):
    pass


class DynamicBatchNorm1d(_BatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with a channel mask."""

    static_class = nn.BatchNorm1d


class DynamicBatchNorm2d(_BatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with a channel mask."""

    static_class = nn.BatchNorm2d


class DynamicBatchNorm3d(_BatchNormMixin, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with a channel mask."""

    static_class = nn.BatchNorm3d


class DynamicSyncBatchNorm(_BatchNormMixin, nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` with a channel mask."""

    static_class = nn.SyncBatchNorm


class _InstanceNormMixin(DynamicNormMixin):
    def _unbatched_ndim(self) -> int:
        return self._get_no_batch_dim()


class DynamicInstanceNorm1d(_InstanceNormMixin, nn.InstanceNorm1d):
    """``nn.InstanceNorm1d`` with a channel mask."""

    static_class = nn.InstanceNorm1d


class DynamicInstanceNorm2d(_InstanceNormMixin, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` with a channel mask."""

    static_class = nn.InstanceNorm2d


class DynamicInstanceNorm3d(_InstanceNormMixin, nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` with a channel mask."""

    static_class = nn.InstanceNorm3d


BatchNormKind.dynamic_ops = {
    nn.BatchNorm1d: DynamicBatchNorm1d, nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.BatchNorm3d: DynamicBatchNorm3d, nn.InstanceNorm1d: DynamicInstanceNorm1d,
    nn.InstanceNorm2d: DynamicInstanceNorm2d, nn.InstanceNorm3d: DynamicInstanceNorm3d,
    nn.SyncBatchNorm: DynamicSyncBatchNorm,
}
for _cls in BatchNormKind.dynamic_ops.values():
    MODELS.register_module(module=_cls)
BATCH_NORM = BatchNormKind()
