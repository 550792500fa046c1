"""razor_widgets: explore structured (channel) pruning of any PyTorch model.

Everything a notebook needs is importable from here, under MMRazor's names where its
pruning framework has them.
"""
from .algorithms import BaseAlgorithm, IteAlgorithm, PruneStep
from .analysis import UnprunableChannelsWarning
from .compat import BaseModel
from .dynamic_ops import DynamicChannelMixin
from .export_check import ExportError, UncheckedExportWarning
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
from .unit_labels import UnitRole, describe_unit, unit_role

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
    "TraceError", "UnprunableChannelsWarning", "count_resources", "reference_flops",
    # module mutables and mutators, derived mutables, searchable models, algorithms
    "BaseAlgorithm", "CandidateCounter", "DerivedMethodMixin", "DerivedMutable", "DiffModuleMutator",
    "DiffMutableModule", "DiffMutableOP", "IteAlgorithm", "ModuleMutator", "MutableModule", "MutableValue",
    "OneShotModuleMutator", "OneShotMutableModule", "OneShotMutableOP", "OneShotMutableValue", "PruneStep",
    "SearchableShuffleNetV2", "ShuffleBlock", "ShuffleXception", "derive_concat_mutable",
    "derive_divide_mutable", "derive_expand_mutable",
    # the export's self-check
    "ExportError", "UncheckedExportWarning",
    # the explorer widget (loaded on first use), plans and budgets
    "PruningExplorer", "PlanError", "fit_budget", "load_choices", "save_choices",
    # recovery training
    "LossHistory", "finetune", "full_choice_copy",
    # quality: evaluation contract, sensitivity scans
    "EvaluationError", "Sensitivity", "sensitivity_scan",
    # importance criteria as unit types, and the calibration pass of the data criteria
    "ActivationMutableChannelUnit", "BNScaleMutableChannelUnit", "ImportanceMutableChannelUnit",
    "L2MutableChannelUnit", "RandomMutableChannelUnit", "TaylorMutableChannelUnit", "calibrate",
    # a model being pruned, without widgets: channel and searchable-op choices, counts, export, plans
    "ChosenPathCounter", "ModuleGroup", "PruningSession",
    # what a unit is (heads, KV groups, hidden size, MLP); HF exports that their config cannot say
    "HFConfigWarning", "UnitRole", "describe_unit", "unit_role",
]


def __getattr__(name: str):
    """The widgets load on first use: the engine alone imports no ipywidgets or matplotlib."""
    if name == "PruningExplorer":
        from .widgets import PruningExplorer
        return PruningExplorer
    if name == "fit_budget":
        from .budget import fit_budget
        return fit_budget
    raise AttributeError(f"module 'razor_widgets' has no attribute {name!r}")
