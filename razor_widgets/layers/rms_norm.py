"""torch's own RMS norm over one dim (``nn.RMSNorm`` and ``F.rms_norm`` with an RMSNorm's weight).

Channels: the normalised last dim; input and output channels are one. A pruned RMS norm
averages over the kept channels only, in the masked model as in the export. No MACs.
(Hugging Face's RMSNorm modules compute the mean themselves: ``layers/channel_mean.py``.)
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .layer_norm import DynamicLayerNormMixin, LayerNormKind


class RMSNormKind(LayerNormKind):
    """Channels, counts and importance as a layer norm's; only the module and op differ."""

    name = "rms_norm"
    module_types = (nn.RMSNorm,)
    functions = ("rms_norm",)


class DynamicRMSNormMixin(DynamicLayerNormMixin):
    """An RMS norm that averages over the kept channels only (``F.rms_norm`` under the layer norm's mode)."""

    kept_norm = (F.rms_norm, ("input", "normalized_shape", "weight", "eps"))


class DynamicRMSNorm(DynamicRMSNormMixin, nn.RMSNorm):
    """``nn.RMSNorm`` with a channel mask."""

    static_class = nn.RMSNorm


RMSNormKind.dynamic_ops = {nn.RMSNorm: DynamicRMSNorm}
MODELS.register_module(module=DynamicRMSNorm)
RMS_NORM = RMSNormKind()
