"""torch's own RMS norm over one dim (``nn.RMSNorm`` and ``F.rms_norm`` with an RMSNorm's weight).

Channels: the normalised last dim; input and output channels are one. A pruned RMS norm
averages over the kept channels only, in the masked model as in the export. No MACs.
(Hugging Face's RMSNorm modules compute the mean themselves: ``layers/channel_mean.py``.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..dynamic_ops import DynamicChannelMixin, index_of, kept_rows
from ..registry import MODELS
from .layer_norm import LayerNormKind


class RMSNormKind(LayerNormKind):
    """Channels, counts and importance as a layer norm's; only the module and op differ."""

    name = "rms_norm"
    module_types = (nn.RMSNorm,)
    functions = ("rms_norm",)


class _KeptRMSNorm(TorchFunctionMode):
    """Inside an RMSNorm's forward: normalise over the kept channels only, as the export does."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.idx = mask.nonzero().squeeze(1)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.rms_norm:
            return func(*args, **kwargs)
        bound = {**dict(zip(("input", "normalized_shape", "weight", "eps"), args)), **kwargs}
        x, idx = bound["input"], self.idx.to(bound["input"].device)
        kept = F.rms_norm(x.index_select(-1, idx), (len(idx),), kept_rows(bound.get("weight"), idx), bound.get("eps"))
        return torch.zeros_like(x).index_copy(-1, idx, kept)


class DynamicRMSNormMixin(DynamicChannelMixin):
    container_names = {"in_channels": "num_features", "out_channels": "num_features"}

    def _channel_counts(self) -> dict[str, int]:
        return {"num_features": self.normalized_shape[-1]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        with _KeptRMSNorm(mask):
            return super().forward(x)

    def to_static_op(self) -> nn.Module:
        idx = index_of(self.mask("out_channels"), self.normalized_shape[-1])
        params = {k: kept_rows(v, idx) for k, v in self._parameters.items()}
        return self._static_copy(params, {}, normalized_shape=(len(idx),))


class DynamicRMSNorm(DynamicRMSNormMixin, nn.RMSNorm):
    static_class = nn.RMSNorm


RMSNormKind.dynamic_ops = {nn.RMSNorm: DynamicRMSNorm}
MODELS.register_module(module=DynamicRMSNorm)
RMS_NORM = RMSNormKind()
