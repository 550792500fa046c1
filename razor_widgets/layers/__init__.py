"""Layer kinds: one module per family of layers, each owning its rules, dynamic op, counts,
channel counts and importance weights (see ``base.py`` and docs/architecture.md).

Adding a kind: write ``layers/<family>.py`` with a :class:`LayerKind` subclass and its dynamic
op, register its instance below, and add its tests.
"""
from .attention import MULTIHEAD_ATTENTION, DynamicMultiheadAttention, DynamicMultiheadAttentionMixin
from .base import FunctionOwner, LayerGeometry, LayerKind, Term
from .batch_norm import (
    BATCH_NORM,
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicInstanceNorm1d,
    DynamicInstanceNorm2d,
    DynamicInstanceNorm3d,
)
from .bilinear import BILINEAR, DynamicBilinear
from .channel_mean import CHANNEL_MEAN, DynamicChannelMean
from .conv import CONV, DynamicConv1d, DynamicConv2d, DynamicConv3d
from .conv_transpose import CONV_TRANSPOSE, DynamicConvTranspose1d, DynamicConvTranspose2d, DynamicConvTranspose3d
from .embedding import EMBEDDING
from .experts import FUSED_EXPERTS, DynamicFusedExperts
from .group_norm import GROUP_NORM, DynamicGroupNorm
from .layer_norm import LAYER_NORM, DynamicLayerNorm, guard_fused_paths, remove_fused_path_guards
from .linear import LINEAR, DynamicLinear
from .local_response_norm import LOCAL_RESPONSE_NORM, DynamicCrossMapLRN2d, DynamicLocalResponseNorm
from .prelu import PRELU, DynamicPReLU
from .recurrent import RECURRENT
from .registry import (
    KINDS,
    LAYER_KINDS,
    LayerKindRegistry,
    dynamic_op_for,
    function_kind,
    function_names,
    kind_of,
    leaf_kind,
    register_family_type,
    register_kind,
)
from .rms_norm import RMS_NORM, DynamicRMSNorm
from .transposed_linear import OWNED_LINEAR, TRANSPOSED_LINEAR, DynamicOwnedLinear, DynamicTransposedLinear

for _kind in (CONV, CONV_TRANSPOSE, LINEAR, BATCH_NORM, LAYER_NORM, GROUP_NORM, MULTIHEAD_ATTENTION,
              EMBEDDING, CHANNEL_MEAN, TRANSPOSED_LINEAR, FUSED_EXPERTS, OWNED_LINEAR, RMS_NORM):
    register_kind(_kind)
register_kind(PRELU)
register_kind(RECURRENT)
register_kind(LOCAL_RESPONSE_NORM)
register_kind(BILINEAR)

__all__ = [
    "KINDS", "LAYER_KINDS", "LayerKindRegistry", "FunctionOwner", "LayerGeometry", "LayerKind", "Term", "register_kind",
    "register_family_type", "kind_of",
    "leaf_kind", "function_kind", "function_names", "dynamic_op_for", "guard_fused_paths", "remove_fused_path_guards",
    "DynamicBatchNorm1d", "DynamicBatchNorm2d", "DynamicBatchNorm3d", "DynamicConv1d",
    "DynamicConv2d", "DynamicConv3d", "DynamicConvTranspose1d", "DynamicConvTranspose2d",
    "DynamicConvTranspose3d", "DynamicGroupNorm", "DynamicInstanceNorm1d",
    "DynamicInstanceNorm2d", "DynamicInstanceNorm3d", "DynamicLayerNorm", "DynamicLinear",
    "DynamicMultiheadAttention", "DynamicMultiheadAttentionMixin", "DynamicChannelMean",
    "DynamicTransposedLinear", "DynamicFusedExperts", "DynamicOwnedLinear", "DynamicRMSNorm",
    "DynamicPReLU",
    "DynamicLocalResponseNorm", "DynamicCrossMapLRN2d", "DynamicBilinear",
]
