"""What the per-channel norms share (batch, instance, group, layer and RMS norms).

The kind: input and output channels are one; no MACs (docs/counting.md); every 1-D parameter
keeps the kept channels; a channel's affine weight and bias are its importance slices. The
dynamic op of a norm whose statistics span its channels (layer, RMS and group norms): pruned,
it normalises over the kept channels only, in the masked model as in the export.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .base import LayerGeometry, LayerKind, Term, raw_param
from .dynamic_ops import DynamicChannelMixin, index_of, kept_rows


class NormKind(LayerKind):
    """A per-channel norm; ``channel_dim`` is the dim of its output that holds the channels."""

    has_macs = False
    channel_dim = 1  # batch and group norms; -1 for norms over the last dim

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """1-D parameters keep the kept channels; others are counted whole."""
        return Term(1, (param.kept(True),)) if len(shape) == 1 else None

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The affine weight and bias (when present), one entry per channel."""
        return {name: t for name in ("weight", "bias") if (t := raw_param(module, name)) is not None}

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The same as :meth:`output_channel_weights`: input and output channels are one."""
        return self.output_channel_weights(module)  # input and output channels are one

    def output_channel_dim(self, module: nn.Module, output: Any) -> int | None:
        """``channel_dim``, on a tensor that has it (dim 1: a batched one)."""
        return self.channel_dim if isinstance(output, torch.Tensor) and output.dim() > self.channel_dim else None


def kept_parameters(module: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Every parameter of a per-channel norm at the kept rows ``idx``."""
    return {k: kept_rows(v, idx) for k, v in module._parameters.items()}


class KeptChannelsNorm(TorchFunctionMode):
    """Inside a norm's forward: normalise over the kept channels only, as the export does.
    ``function`` is the functional norm the module calls, ``names`` its arguments in order,
    ``dim`` the channel dim (a ``normalized_shape`` argument becomes the kept count)."""

    def __init__(self, mask: torch.Tensor, function: Any, names: tuple[str, ...], dim: int = -1) -> None:
        super().__init__()
        self.idx = mask.nonzero().squeeze(1)
        self.function, self.names, self.dim = function, names, dim

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not self.function:
            return func(*args, **kwargs)
        bound = {**dict(zip(self.names, args)), **kwargs}
        x = bound.pop("input")
        idx = self.idx.to(x.device)
        if "normalized_shape" in bound:
            bound["normalized_shape"] = (len(idx),)
        for key in ("weight", "bias"):  # per channel: the kept rows
            if key in bound:
                bound[key] = kept_rows(bound[key], idx)
        kept = self.function(x.index_select(self.dim, idx), **bound)
        return torch.zeros_like(x).index_copy(self.dim, idx, kept)


class DynamicKeptChannelsNormMixin(DynamicChannelMixin):
    """A norm that keeps only the masked channels: its functional norm (``kept_norm``: the
    function and its argument names) runs under :class:`KeptChannelsNorm` on ``channel_dim``."""

    kept_norm: tuple[Any, tuple[str, ...]]
    channel_dim = -1

    def _norm_channels(self) -> int:
        """The module's number of channels."""
        raise NotImplementedError

    def _static_sizes(self, kept: int) -> dict[str, Any]:
        """The module's size attributes for ``kept`` channels (for the export)."""
        raise NotImplementedError

    def _channel_counts(self) -> dict[str, int]:
        return {self.container_names["out_channels"]: self._norm_channels()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original forward; with a partial mask, the norm runs over the kept channels only (the
        others output zero)."""
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        with KeptChannelsNorm(mask, *self.kept_norm, dim=self.channel_dim):  # also inside a subclass's own forward
            return super().forward(x)

    def to_static_op(self) -> nn.Module:
        """A plain norm of the kept channels (parameters cut, size attributes set)."""
        idx = index_of(self.mask("out_channels"), self._norm_channels())
        return self._static_copy(kept_parameters(self, idx), {}, **self._static_sizes(len(idx)))
