"""razor_widgets: explore structured (channel) pruning of any PyTorch model.

Everything a notebook needs is importable from here, under MMRazor's names where its
pruning framework has them.
"""
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
    "ExportError", "UncheckedExportWarning", "ExportCheckWarning",
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
    # models built on the meta device (shapes, no data)
    "MetaDeviceError", "is_meta_model",
    # what a unit is (heads, KV groups, hidden size, MLP); HF exports that their config cannot say
    "HFConfigWarning", "UnitRole", "describe_unit", "unit_role",
    "unit_label",
    # a plan as recipes for other tools: Torch-Pruning's pruning_ratio_dict, MMRazor's channel config
    "RecipeError", "mmrazor_channel_config", "recipes", "torch_pruning_ratios",
    # group importance (every slice a unit moves)
    "GroupMagnitudeMutableChannelUnit", "GroupTaylorMutableChannelUnit",
    # depth as a choice: block units, their mutable and importance
    "BlockMutable", "BlockSpec", "block_importance", "find_blocks",
    "ZeroBranch",  # what a dropped inline residual branch becomes in an export
    # a pruned model saved as data that always loads; the uniform plan nearest the choices
    "PrunedDirectoryError", "load_pruned", "nearest_uniform_plan", "save_pruned",
    # calibration criteria of language models (Minitron activations, structured Wanda)
    "MinitronMutableChannelUnit", "WandaMutableChannelUnit",
    # latency: measured per-layer tables, the live latency counter, budgets in milliseconds
    "Latency", "LatencyBudgetFit", "LatencyProfileStopped", "LatencyTable", "ProfileProgress", "Timing",
    "fit_latency_budget", "measure_latency", "profile_latency", "StepCurve", "suggest_divisor", "unit_step_curve",
]


def __getattr__(name: str):
    """Everything loads on first use, as one piece (so every registered type is there):
    ``import razor_widgets`` alone imports no torch, and the engine alone imports no ipywidgets
    or matplotlib (the widgets load when asked for)."""
    if name.startswith("__"):
        raise AttributeError(f"module 'razor_widgets' has no attribute {name!r}")
    import importlib
    import importlib.util

    if name not in __all__ and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule (``from . import rules``)
    exports = importlib.import_module(f"{__name__}.exports")
    globals().update({key: value for key, value in vars(exports).items() if not key.startswith("_")})
    if name == "PruningExplorer":
        from .widgets import PruningExplorer
        return PruningExplorer
    if name == "fit_budget":
        from .budget import fit_budget
        return fit_budget
    if name in globals():
        return globals()[name]
    raise AttributeError(f"module 'razor_widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
