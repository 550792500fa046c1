"""The uniform plan nearest a mutator's choices: every layer of a kind pruned alike.

A Hugging Face config has one number per size (``intermediate_size``, ``num_key_value_heads``):
a plan in which every layer's heads, KV groups, MLP and experts keep the same count is one
that ``save_pretrained`` / ``from_pretrained`` can describe. :func:`nearest_uniform_plan` gives
each group of alike layer units the choice nearest their mean kept fraction.
"""
from __future__ import annotations

from typing import Any

from ..analysis.unit_labels import LAYER_ROLES, unit_role
from ..mutables.unit_choices import choice_for_fraction

__all__ = ["nearest_uniform_plan"]


def nearest_uniform_plan(mutator: Any) -> dict[str, Any]:
    """``{unit name: choice}``: the current choices, except that units of one layer role (heads,
    KV groups, head dims, MLP, experts) and one size all get the choice nearest their mean kept
    fraction (the least-squares closest uniform plan). The mutator's choices do not change;
    apply it with ``mutator.set_choices``."""
    groups: dict[tuple, list[Any]] = {}
    plan = {str(u.name): u.current_choice for u in mutator.mutable_units}
    for unit in mutator.mutable_units:
        role = unit_role(unit)
        if role.kind in LAYER_ROLES:
            groups.setdefault((role.kind, unit.num_channels, unit.repeats), []).append(unit)
    for units in groups.values():
        mean = sum(float(u.current_mask.sum()) / u.num_channels for u in units) / len(units)
        for unit in units:
            plan[str(unit.name)] = choice_for_fraction(unit, mean)
    return plan
