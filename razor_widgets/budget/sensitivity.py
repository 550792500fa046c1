"""The sensitivity budget: keep X % of MACs (params, FLOPs) with the least predicted loss of score.

The predicted loss of a set of choices is the sum over units of each unit's drop below the
baseline read off its sensitivity curve at the fraction it keeps (``Sensitivity.predicted_drop``);
drops are assumed to add up (first order). Greedy: from every unit full, one unit goes one step
down at a time, the step of least predicted drop per unit of metric saved, until the budget is
met; when a block was dropped, width steps then go back up (most drop won back per metric first)
while the budget holds, so its coarse step does not leave the rest cut for nothing. Counts are exact
what-if counts (no forward pass); units the scan did not cover stay full.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..counting.resources import Resources
from ..mutables.block_mutable import DROP, KEEP, BlockMutable
from ..mutables.unit_choices import choice_for_fraction
from .metrics import Metric, metric_value, original_value

__all__ = ["fit_sensitivity_budget", "LEVELS"]

LEVELS = 32  # steps per unit between full and its smallest choice (fewer for small units)


@dataclass(frozen=True)
class Step:
    """One rung of a unit's ladder: a choice, the fraction of channels it keeps, its drop."""

    choice: Any
    fraction: float
    drop: float


def fit_sensitivity_budget(mutator: Any, keep: float, metric: str | Metric, sensitivity: Any
                           ) -> tuple[dict[Any, Any], Resources]:
    """The greedy search of the module docstring; returns the choices and their counts."""
    scanned = _scanned_units(mutator, sensitivity)
    setter = getattr(mutator, "channel_mutator", mutator)  # a counter of the chosen path counts, its mutator sets
    units = [*mutator.mutable_units, *getattr(mutator, "removable_blocks", [])]  # depth against width
    full = {u.name: u.validate_choice(u.max_choice) for u in units}
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in units]
    try:  # choices are tried on the mutator itself (incremental counts) and put back after
        ladders = {u.name: _ladder(u, key, sensitivity) for u, key in scanned}
        setter.set_choices(full)
        level = dict.fromkeys(ladders, 0)
        neighbours = _neighbours([u for u, _ in scanned])
        current = mutator.resources()
        limit = keep * original_value(current, metric)
        saving: dict[Any, float] = {}
        while metric_value(current, metric) > limit:
            best = _best_step(mutator, metric, ladders, level, saving, metric_value(current, metric))
            if best is None and saving:
                saving.clear()  # cached savings may be stale across couplings: look once more
                best = _best_step(mutator, metric, ladders, level, saving, metric_value(current, metric))
            if best is None:
                break  # every unit at its smallest step
            level[best] += 1
            setter.set_choices({best: ladders[best][level[best]].choice})
            current = mutator.resources()
            for name in neighbours[best]:
                saving.pop(name, None)
        if any(isinstance(u, BlockMutable) and level.get(u.name) for u, _ in scanned):
            _refill(mutator, setter, metric, ladders, level, limit)  # a dropped block's coarse step: fill the slack
        choices = {**full, **{name: ladders[name][i].choice for name, i in level.items()}}
    finally:
        for mutable, state in saved:
            mutable.restore(state)
    return choices, mutator.resources(choices=choices)


def _scanned_units(mutator: Any, sensitivity: Any) -> list[tuple[Any, Any]]:
    """(unit, its key in the table) for every unit the scan covered (names compared as text:
    a table read from CSV has string names)."""
    if sensitivity is None or not hasattr(sensitivity, "predicted_drop"):
        raise ValueError("mode='sensitivity' needs sensitivity=, the Sensitivity that sensitivity_scan returned")
    units = [*mutator.mutable_units, *getattr(mutator, "removable_blocks", [])]
    names = {str(u.name) for u in units}
    unknown = [u for u in sensitivity.table if str(u) not in names]
    if unknown:
        raise ValueError(f"the sensitivity table names units this mutator does not have: "
                         f"{', '.join(map(repr, unknown[:3]))}{', ...' if len(unknown) > 3 else ''}")
    keys = {str(k): k for k in sensitivity.table}
    scanned = [(u, keys[str(u.name)]) for u in units if str(u.name) in keys]
    if not scanned:
        raise ValueError("the sensitivity table covers no unit of this mutator")
    return scanned


def _ladder(unit: Any, key: Any, sensitivity: Any) -> list[Step]:
    """The unit's choices from full down to its smallest, one per kept channel count, each
    with its predicted drop (the caller puts the unit's choice back)."""
    if isinstance(unit, BlockMutable):  # kept, or dropped at the drop the scan measured
        return [Step(KEEP, 1.0, 0.0), Step(DROP, 0.0, sensitivity.predicted_drop(key, 0.0))]
    wanted = list(np.linspace(1.0, 0.0, LEVELS + 1)) + list(sensitivity.table[key])
    by_kept: dict[int, Any] = {}
    for fraction in sorted(set(wanted), reverse=True):
        choice = choice_for_fraction(unit, fraction)
        unit.set_valid_choice(choice)
        by_kept.setdefault(unit.activated_channels, choice)
    steps = [Step(choice, kept / unit.num_channels, 0.0) for kept, choice in sorted(by_kept.items(), reverse=True)]
    return [Step(s.choice, s.fraction, sensitivity.predicted_drop(key, s.fraction)) for s in steps]


def _neighbours(units: list[Any]) -> dict[Any, set[Any]]:
    """Units that share a layer with each unit (its count terms change when they do), itself included;
    a block's saving follows every width, and a dropped block changes every saving."""
    blocks = {u.name for u in units if isinstance(u, BlockMutable)}
    layers = {u.name: {c.name.rpartition(".")[0] if c.param_dim is not None else c.name for c in u.channels}
              for u in units if u.name not in blocks}
    near = {a: {b for b in layers if layers[a] & layers[b]} | blocks for a in layers}
    return near | {block: set(layers) | blocks for block in blocks}


def _best_step(mutator: Any, metric: str | Metric, ladders: dict[Any, list[Step]], level: dict[Any, int],
               saving: dict[Any, float], value: int) -> Any:
    """The unit whose next step down costs the least predicted drop per unit of metric saved."""
    best, best_key = None, None
    for name, ladder in ladders.items():
        i = level[name]
        if i + 1 >= len(ladder):
            continue
        if name not in saving:  # a what-if of this one step: every choice is as it was after
            saving[name] = value - metric_value(mutator.resources(choices={name: ladder[i + 1].choice}), metric)
        if saving[name] <= 0:
            continue
        key = ((ladder[i + 1].drop - ladder[i].drop) / saving[name], -saving[name])
        if best_key is None or key < best_key:
            best, best_key = name, key
    return best


def _refill(mutator: Any, setter: Any, metric: str | Metric, ladders: dict[Any, list[Step]],
            level: dict[Any, int], limit: float) -> None:
    """Take width steps back up while the budget holds: each time the step that wins back the most
    predicted drop per unit of metric it adds (the mutator is at ``level``'s choices)."""
    blocks = {b.name for b in getattr(mutator, "block_units", [])}
    while True:
        value = metric_value(mutator.resources(), metric)
        best, best_key = None, None
        for name, i in level.items():
            if i == 0 or name in blocks:  # a dropped block stays dropped: widths fill the slack
                continue
            after = metric_value(mutator.resources(choices={name: ladders[name][i - 1].choice}), metric)
            won = ladders[name][i].drop - ladders[name][i - 1].drop
            if after > limit or won <= 0:  # a step that wins nothing back stays taken
                continue
            key = (won / max(after - value, 1e-12), won)
            if best_key is None or key > best_key:
                best, best_key = name, key
        if best is None:
            return
        level[best] -= 1
        setter.set_choices({best: ladders[best][level[best]].choice})
