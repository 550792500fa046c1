"""A plan as recipes other tools read: our JSON plan, a Torch-Pruning ``pruning_ratio_dict``
and an MMRazor channel config (``recipes`` gives all three as JSON-able objects).

Torch-Pruning's ``MetaPruner(..., pruning_ratio_dict={module: ratio})`` takes one ratio per layer
and keeps ``int(channels * (1 - ratio))`` of its output channels; the ratios here are chosen so
that this is exactly the number the plan keeps (see ``torch_pruning_ratios``).
"""
from __future__ import annotations

from typing import Any

from ..layers import kind_of
from .plans import plan_of

# the layer kinds whose output channels Torch-Pruning prunes as a group's root
TORCH_PRUNING_ROOTS = ("conv", "conv_transpose", "linear")


class RecipeError(ValueError):
    """A plan that a recipe's format cannot express (the message names the layer and why)."""


def torch_pruning_ratios(mutator: Any) -> dict[str, float]:
    """``{layer name: pruning ratio}`` for every conv and linear layer whose output channels a
    mutable unit prunes, for ``pruning_ratio_dict={model.get_submodule(n): r for n, r in ...}``
    (with ``pruning_ratio=0`` so that no other layer is pruned).

    The ratio is ``1 - (kept + 0.5) / channels`` (0 for a unit kept whole): Torch-Pruning keeps
    ``int(channels * (1 - ratio))`` channels, which is then exactly ``kept`` (the plain
    ``1 - kept / channels`` can fall a hair short of ``kept`` in floating point and lose one).
    Torch-Pruning gives one ratio per layer: a layer whose output channels more than one unit
    shares raises ``RecipeError``; which channels it keeps is for its own importance to choose.
    """
    ratios: dict[str, float] = {}
    owners: dict[str, Any] = {}
    for unit in mutator.mutable_units:
        kept, total = int(unit.activated_channels), int(unit.num_channels)
        ratio = 0.0 if kept >= total else 1.0 - (kept + 0.5) / total
        for channel in unit.output_related:
            kind = kind_of(channel.module)
            if kind is None or kind.name not in TORCH_PRUNING_ROOTS or channel.param_dim is not None:
                continue
            out = _out_channels(channel.module)
            if (channel.start, channel.end) != (0, out):
                raise RecipeError(f"layer {channel.name!r}: unit {unit.name!r} prunes only its output channels "
                                  f"{channel.start}-{channel.end} of {out}; Torch-Pruning's pruning_ratio_dict "
                                  f"gives one ratio per layer")
            if channel.num_channels != total:
                raise RecipeError(f"layer {channel.name!r}: its {out} outputs repeat the {total} channels of unit "
                                  f"{unit.name!r} (blocks pruned alike); Torch-Pruning's pruning_ratio_dict "
                                  f"cannot say which")
            if channel.name in owners and owners[channel.name] is not unit:
                raise RecipeError(f"layer {channel.name!r}: its outputs belong to more than one unit "
                                  f"({owners[channel.name].name!r}, {unit.name!r})")
            owners[channel.name] = unit
            ratios[channel.name] = ratio
    return ratios


def _out_channels(module: Any) -> int:
    for attr in ("out_channels", "out_features"):
        if isinstance(getattr(module, attr, None), int):
            return int(getattr(module, attr))
    return int(module.weight.shape[0])


def mmrazor_channel_config(mutator: Any) -> dict[str, Any]:
    """MMRazor's channel config of the plan: ``config_template(with_unit_init_args=True,
    with_channels=True)``, each unit with its ``choice``; ``MODELS.build`` of it, prepared on the
    same model, has the plan's choices (MMRazor's ``ChannelMutator`` reads the same keys)."""
    return mutator.config_template(with_unit_init_args=True, with_channels=True)


def recipes(mutator: Any, module_mutator: Any = None) -> dict[str, Any]:
    """The plan in three forms: ``plan`` (our JSON ``{unit: choice}``), ``torch_pruning``
    (``torch_pruning_ratios``; absent, with the reason under ``torch_pruning_error``, when the
    plan cannot be said that way) and ``mmrazor`` (``mmrazor_channel_config``)."""
    out: dict[str, Any] = {"plan": plan_of(mutator, module_mutator)}
    try:
        out["torch_pruning"] = torch_pruning_ratios(mutator)
    except RecipeError as error:
        out["torch_pruning_error"] = str(error)
    out["mmrazor"] = mmrazor_channel_config(mutator)
    return out
