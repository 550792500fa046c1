"""razor_widgets: explore structured (channel) pruning of any PyTorch model.

Everything a notebook needs is importable from here, under MMRazor's names where its
pruning framework has them.
"""
from .algorithms import BaseAlgorithm, IteAlgorithm, PruneStep
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
from .models import SearchableShuffleNetV2, ShuffleBlock, ShuffleXception
from .module_counter import CandidateCounter
from .mutables import (
    BaseMutable,
    BaseMutableChannel,
    Channel,
    ChannelUnit,
    DerivedMethodMixin,
    DerivedMutable,
    DerivedMutableChannel,
    DiffMutableModule,
    DiffMutableOP,
    L1MutableChannelUnit,
    MutableChannelContainer,
    MutableChannelUnit,
    MutableModule,
    MutableValue,
    OneShotMutableChannelUnit,
    OneShotMutableModule,
    OneShotMutableOP,
    OneShotMutableValue,
    SequentialMutableChannel,
    SequentialMutableChannelUnit,
    SimpleMutableChannel,
    SlimmableChannelUnit,
    SquentialMutableChannel,
    derive_concat_mutable,
    derive_divide_mutable,
    derive_expand_mutable,
)
from .mutators import (
    BaseMutator,
    ChannelMutator,
    DiffModuleMutator,
    ModuleMutator,
    OneShotChannelMutator,
    OneShotModuleMutator,
    SlimmableChannelMutator,
)
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
    # module mutables and mutators, derived mutables, searchable models, algorithms
    "BaseAlgorithm", "CandidateCounter", "DerivedMethodMixin", "DerivedMutable", "DiffModuleMutator",
    "DiffMutableModule", "DiffMutableOP", "IteAlgorithm", "ModuleMutator", "MutableModule", "MutableValue",
    "OneShotModuleMutator", "OneShotMutableModule", "OneShotMutableOP", "OneShotMutableValue", "PruneStep",
    "SearchableShuffleNetV2", "ShuffleBlock", "ShuffleXception", "derive_concat_mutable",
    "derive_divide_mutable", "derive_expand_mutable",
]
