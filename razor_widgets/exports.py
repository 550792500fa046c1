"""Everything ``razor_widgets`` exports, imported at once.

The package loads this module on the first attribute it is asked for, so that
``import razor_widgets.cli`` (the command line) starts without importing torch.
"""
# ruff: noqa: F401  (every import here is an export)
from .algorithms import BaseAlgorithm, IteAlgorithm, PruneStep
from .analysis.block_units import BlockSpec, find_blocks
from .analysis.unit_labels import UnitRole, describe_unit, unit_label, unit_role
from .budget.latency_fit import LatencyBudgetFit, fit_latency_budget
from .budget.latency_snap import SnappedCounts, fast_counts, snap_to_fast_counts, step_divisor
from .budget.uniform_plan import nearest_uniform_plan
from .channels.analysis_result import UnprunableChannelsWarning
from .counting.latency_counter import unit_latency_curve
from .counting.latency_profile import LatencyProfileStopped, ProfileProgress, profile_latency
from .counting.latency_steps import StepCurve, suggest_divisor, unit_step_curve
from .counting.latency_table import Latency, LatencyTable
from .counting.latency_timing import Timing, measure_latency
from .counting.module_counter import CandidateCounter, ChosenPathCounter
from .counting.resources import Resources, count_resources, reference_flops
from .export.block_removal import ZeroBranch  # a dropped inline residual branch in an export
from .export.export_check import ExportCheckWarning, ExportError, UncheckedExportWarning
from .export.hf_export import HFConfigWarning
from .export.plans import PlanError, load_choices, save_choices
from .export.recipes import RecipeError, mmrazor_channel_config, recipes, torch_pruning_ratios
from .importance import (
    ActivationMutableChannelUnit,
    BNScaleMutableChannelUnit,
    ImportanceMutableChannelUnit,
    L2MutableChannelUnit,
    MinitronMutableChannelUnit,
    RandomMutableChannelUnit,
    TaylorMutableChannelUnit,
    WandaMutableChannelUnit,
    calibrate,
)
from .importance.block_importance import block_importance
from .importance.group_units import GroupMagnitudeMutableChannelUnit, GroupTaylorMutableChannelUnit
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
from .layers.dynamic_ops import DynamicChannelMixin
from .models import SearchableShuffleNetV2, ShuffleBlock, ShuffleXception
from .models.base_model import BaseModel
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
from .mutables.block_mutable import BlockMutable
from .mutators import (
    BaseMutator,
    ChannelMutator,
    DiffModuleMutator,
    ModuleMutator,
    OneShotChannelMutator,
    OneShotModuleMutator,
    SlimmableChannelMutator,
)
from .mutators.pruned_directory import PrunedDirectoryError, load_pruned, save_pruned
from .pruning_session import ModuleGroup, PruningSession
from .quality import EvaluationError, Sensitivity, sensitivity_scan
from .quality.finetune import LossHistory, finetune, full_choice_copy
from .registry import MODELS, Registry
from .trace.meta_device import MetaDeviceError, is_meta_model
from .trace.tracer import TraceError
