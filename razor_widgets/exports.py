"""Everything ``razor_widgets`` exports, imported at once.

The package loads this module on the first attribute it is asked for, so that
``import razor_widgets.cli`` (the command line) starts without importing torch.
"""
# ruff: noqa: F401  (every import here is an export)
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
from .plans import PlanError, load_choices, save_choices
from .registry import MODELS, Registry
from .resources import Resources, count_resources, reference_flops
from .tracing import TraceError
