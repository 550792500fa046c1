"""razor_widgets: explore structured (channel) pruning of any PyTorch model.

Everything a notebook needs is importable from here, under MMRazor's names where its
pruning framework has them.
"""
from .analysis import UnprunableChannelsWarning
from .compat import BaseModel
from .dynamic_ops import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicChannelMixin,
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicGroupNorm,
    DynamicLayerNorm,
    DynamicLinear,
    DynamicMultiheadAttention,
)
from .mutables import (
    BaseMutable,
    BaseMutableChannel,
    Channel,
    ChannelUnit,
    DerivedMutableChannel,
    L1MutableChannelUnit,
    MutableChannelContainer,
    MutableChannelUnit,
    OneShotMutableChannelUnit,
    SequentialMutableChannel,
    SequentialMutableChannelUnit,
    SimpleMutableChannel,
    SlimmableChannelUnit,
    SquentialMutableChannel,
)
from .mutators import BaseMutator, ChannelMutator, OneShotChannelMutator, SlimmableChannelMutator
from .registry import MODELS, Registry
from .resources import Resources, count_resources, reference_flops

__version__ = "0.1.0"

__all__ = [
    "MODELS", "BaseModel", "BaseMutable", "BaseMutableChannel", "BaseMutator", "Channel",
    "ChannelMutator", "ChannelUnit", "DerivedMutableChannel", "DynamicBatchNorm1d",
    "DynamicBatchNorm2d", "DynamicBatchNorm3d", "DynamicChannelMixin", "DynamicConv1d",
    "DynamicConv2d", "DynamicConv3d", "DynamicGroupNorm", "DynamicLayerNorm", "DynamicLinear",
    "DynamicMultiheadAttention", "L1MutableChannelUnit", "MutableChannelContainer",
    "MutableChannelUnit", "OneShotChannelMutator", "OneShotMutableChannelUnit", "Registry", "Resources",
    "SequentialMutableChannel", "SequentialMutableChannelUnit", "SimpleMutableChannel",
    "SlimmableChannelMutator", "SlimmableChannelUnit", "SquentialMutableChannel",
    "UnprunableChannelsWarning", "count_resources", "reference_flops",
]
