"""Choices that meet a budget: "keep X % of MACs" (or of params, or FLOPs).

Three ways to spread the cut over the units: ``uniform`` keeps the same fraction of every unit,
``l1`` ranks all channels of all units by the L1 norm of their weights (normalised per unit, so
that layers of different scales compare) and keeps the strongest, and ``sensitivity`` prunes
where a sensitivity scan predicts the least loss of score (``sensitivity.py``). All search with what-if
counts (``mutator.resources(choices=...)``): no forward pass, and the mutator's choices are left
as they were. The L1 ranking decides how many channels each unit keeps; which ones it keeps is
the unit type's business (``L1MutableChannelUnit`` keeps the largest, sequential units a prefix).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..counting.resources import Resources
from ..mutables.units import L1MutableChannelUnit, MutableChannelUnit
from .latency_fit import LATENCY_MODES, fit_latency_budget
from .sensitivity import fit_sensitivity_budget
from .unit_choices import choice_for_fraction, number_step, smallest_number

__all__ = ["BudgetFit", "choice_for_fraction", "fit_budget", "l1_importance", "number_step", "smallest_number",
           "METRICS", "MODES"]

METRICS = ("macs", "params", "flops")
MODES = ("uniform", "l1", "sensitivity")


@dataclass(frozen=True)
class BudgetFit:
    """The result of :func:`fit_budget`: the choices, their counts, and whether they meet it."""

    choices: dict[Any, Any]
    resources: Resources
    keep: float
    metric: str
    mode: str

    @property
    def met(self) -> bool:
        """Whether the choices use at most ``keep`` of the original ``metric``."""
        return _value(self.resources, self.metric) <= _limit(self.resources, self.metric, self.keep)


def l1_importance(unit: MutableChannelUnit) -> torch.Tensor:
    """L1 norm per channel position of the unit's writing layers (else its readers), the
    measure ``L1MutableChannelUnit`` ranks by, for a unit of any type."""
    return L1MutableChannelUnit.importance(unit)  # reads only the unit's layers and sizes


def fit_budget(mutator: Any, keep: float, metric: str = "macs", mode: str = "uniform",
               sensitivity: Any = None) -> BudgetFit:
    """Choices that keep at most ``keep`` (a fraction in (0, 1]) of the original ``metric``,
    as close to it as the units' choices allow. Where even the smallest choices use more, those
    are returned and ``met`` is False. The mutator's choices do not change.

    ``mode="sensitivity"`` needs ``sensitivity``, a :class:`Sensitivity` of this mutator: it
    minimises the predicted loss of score (see :func:`fit_sensitivity_budget`)."""
    if metric == "latency":  # budgets in ms (latency_fit.py): needs profile_latency(mutator) first
        if mode not in LATENCY_MODES or sensitivity is not None:
            raise ValueError(f"metric='latency' works with mode {' or '.join(LATENCY_MODES)}, got {mode!r}")
        spread = _uniform(mutator.mutable_units) if mode == "uniform" else _by_l1(mutator.mutable_units)
        return fit_latency_budget(mutator, keep, mode=mode, spread=spread)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    if mode == "sensitivity":
        choices, res = fit_sensitivity_budget(mutator, keep, metric, sensitivity)
        return BudgetFit(choices, res, keep, metric, mode)
    if sensitivity is not None:
        raise ValueError(f"sensitivity= is for mode='sensitivity', not {mode!r}")
    units = mutator.mutable_units
    spread = _uniform(units) if mode == "uniform" else _by_l1(units)
    lo, hi = 0.0, 1.0  # spread(level) uses more as level grows; find the largest level that fits
    best = spread(lo)
    best_res = mutator.resources(choices=best)
    top = spread(hi)
    top_res = mutator.resources(choices=top)
    if _value(top_res, metric) <= _limit(top_res, metric, keep):
        return BudgetFit(top, top_res, keep, metric, mode)
    for _ in range(40):
        mid = (lo + hi) / 2
        choices = spread(mid)
        res = mutator.resources(choices=choices)
        if _value(res, metric) <= _limit(res, metric, keep):
            lo, best, best_res = mid, choices, res
        else:
            hi = mid
        if hi - lo < 1e-4:
            break
    return BudgetFit(best, best_res, keep, metric, mode)


def _value(res: Resources, metric: str) -> int:
    return getattr(res, metric)


def _limit(res: Resources, metric: str, keep: float) -> float:
    return keep * getattr(res, f"original_{metric}")


def _uniform(units: list[MutableChannelUnit]) -> Any:
    def spread(level: float) -> dict[Any, Any]:
        return {u.name: choice_for_fraction(u, level) for u in units}
    return spread


def _by_l1(units: list[MutableChannelUnit]) -> Any:
    """``spread(level)``: each unit keeps its channels whose normalised L1 norm is at least the
    global threshold that ``level`` stands for (level 1 keeps all, level 0 the fewest)."""
    scores = []
    for unit in units:
        imp = l1_importance(unit).numpy()
        mean = imp.mean() if len(imp) else 0.0
        scores.append(np.sort(imp / mean if mean > 0 else np.ones_like(imp)))
    everything = np.sort(np.concatenate(scores)) if scores else np.zeros(0)

    def spread(level: float) -> dict[Any, Any]:
        if not len(everything):
            return {}
        index = min(len(everything) - 1, int((1.0 - level) * len(everything)))
        threshold = everything[index]
        choices = {}
        for unit, s in zip(units, scores):
            kept = len(s) - int(np.searchsorted(s, threshold, side="left"))
            choices[unit.name] = choice_for_fraction(unit, kept / max(1, len(s)))
        return choices
    return spread
