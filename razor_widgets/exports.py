"""Everything ``razor_widgets`` exports, imported at once.

The package loads this module on the first attribute it is asked for, so that
``import razor_widgets.cli`` (the command line) starts without importing torch.
"""
# ruff: noqa: F401  (every import here is an export)
from .algorithms import BaseAlgorithm, IteAlgorithm, PruneStep
from .analysis import UnprunableChannelsWarning
from .compat import BaseModel
from .dynamic_ops import DynamicChannelMixin
from .export_check import ExportCheckWarning, ExportError, UncheckedExportWarning
from .finetune import LossHistory, finetune, full_choice_copy
from .hf_export import HFConfigWarning
from .importance import calibrate
from .layers import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicGroupNorm,
    DynamicLayerNorm,
    DynamicLinear,
    DynamicMultiheadAttention,
)
from .meta_device import MetaDeviceError, is_meta_model
from .models import SearchableShuffleNetV2, ShuffleBlock, ShuffleXception
from .module_counter import CandidateCounter, ChosenPathCounter
from .mutables import (
    ActivationMutableChannelUnit,
    BaseMutable,
    BaseMutableChannel,
    BNScaleMutableChannelUnit,
    Channel,
    ChannelUnit,
    DerivedMethodMixin,
    DerivedMutable,
    DerivedMutableChannel,
    DiffMutableModule,
    DiffMutableOP,
    ImportanceMutableChannelUnit,
    L1MutableChannelUnit,
    L2MutableChannelUnit,
    MutableChannelContainer,
    MutableChannelUnit,
    MutableModule,
    MutableValue,
    OneShotMutableChannelUnit,
    OneShotMutableModule,
    OneShotMutableOP,
    OneShotMutableValue,
    RandomMutableChannelUnit,
    SequentialMutableChannel,
    SequentialMutableChannelUnit,
    SimpleMutableChannel,
    SlimmableChannelUnit,
    SquentialMutableChannel,
    TaylorMutableChannelUnit,
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
from .pruning_session import ModuleGroup, PruningSession
from .quality import EvaluationError, Sensitivity, sensitivity_scan
from .registry import MODELS, Registry
from .resources import Resources, count_resources, reference_flops
from .tracing import TraceError
from .unit_labels import UnitRole, describe_unit, unit_label, unit_role
