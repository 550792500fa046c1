"""Choices that meet a budget: "keep X % of MACs" (or of params, or FLOPs).

Three ways to spread the cut over the units: ``uniform`` keeps the same fraction of every unit,
``l1`` ranks all channels of all units by the L1 norm of their weights (normalised per unit, so
that layers of different scales compare) and keeps the strongest, and ``sensitivity`` prunes
where a sensitivity scan predicts the least loss of score (``sensitivity.py``). All search with what-if
counts (``mutator.resources(choices=...)``): no forward pass, and the mutator's choices are left
as they were. The L1 ranking decides how many channels each unit keeps; which ones it keeps is
the unit type's business (``L1MutableChannelUnit`` keeps the largest, sequential units a prefix).
Also ``global`` (group importance, ``global_rank.py``) and ``measured`` (``measured.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from ..counting.resources import Resources
from ..mutables.unit_choices import choice_for_fraction, number_step, smallest_number
from ..mutables.units import L1MutableChannelUnit, MutableChannelUnit
from .block_budget import with_blocks
from .global_rank import global_spread, ranked_spread
from .latency_fit import LATENCY_MODES, fit_latency_budget
from .latency_sensitivity import fit_latency_sensitivity_budget
from .measured import MeasuredCandidate, fit_measured
from .metrics import MEMORY_METRICS, Metric, metric_of, metric_value, original_value
from .sensitivity import fit_sensitivity_budget

__all__ = ["BudgetFit", "choice_for_fraction", "fit_budget", "l1_importance", "number_step", "smallest_number",
           "METRICS", "MODES"]

METRICS = ("macs", "params", "flops")
METRICS += MEMORY_METRICS  # weights + KV cache at seq_len/batch (bytes); MoE active params
MODES = ("uniform", "l1", "sensitivity", "global", "measured")


@dataclass(frozen=True)
class BudgetFit:
    """The result of :func:`fit_budget`: the choices, their counts, and whether they meet it."""

    choices: dict[Any, Any]
    resources: Resources
    keep: float
    metric: str
    mode: str
    candidates: tuple[MeasuredCandidate, ...] = ()  # mode="measured": every candidate it evaluated
    score: float | None = None  # mode="measured": the measured score of these choices
    seq_len: int | None = None  # metric="memory": the sequence length and batch it was fitted at
    batch: int = 1

    @property
    def met(self) -> bool:
        """Whether the choices use at most ``keep`` of the original ``metric``."""
        measure = metric_of(self.metric, self.seq_len, self.batch)
        return _value(self.resources, measure) <= _limit(self.resources, measure, self.keep)


def l1_importance(unit: MutableChannelUnit) -> torch.Tensor:
    """L1 norm per channel position of the unit's writing layers (else its readers), the
    measure ``L1MutableChannelUnit`` ranks by, for a unit of any type."""
    return L1MutableChannelUnit.importance(unit)  # reads only the unit's layers and sizes


def fit_budget(mutator: Any, keep: float, metric: str = "macs", mode: str = "uniform",
               sensitivity: Any = None, eval_fn: Any = None, executor: Any = None, calibration: Any = None,
               steps: int | None = None, progress: Any = False,
               block_scores: dict[str, float] | None = None, seq_len: int | None = None,
               batch: int = 1, max_ms: float | None = None) -> BudgetFit:
    """Choices that keep at most ``keep`` (a fraction in (0, 1]) of the original ``metric``,
    as close to it as the units' choices allow. Where even the smallest choices use more, those
    are returned and ``met`` is False. The mutator's choices do not change.

    ``mode="sensitivity"`` needs ``sensitivity``, a :class:`Sensitivity` of this mutator: it
    minimises the predicted loss of score (see :func:`fit_sensitivity_budget`); blocks it scanned
    compete with the channels. ``mode="global"`` ranks all channels by group importance
    (``global_rank.py``). ``mode="measured"`` needs ``eval_fn``: the candidate of best measured
    score (``measured.py``; ``executor``, ``steps``, ``progress``; ``calibration`` calibrates data
    units first). ``block_scores`` (``{block name: importance}``, e.g. from ``block_importance``):
    ``uniform``, ``global`` and ``l1`` also drop blocks, the least important first, as many as the
    fraction the level cuts from the channels (``block_budget.py``).
    ``metric="memory"`` (weights + KV cache, bytes) needs ``seq_len`` and takes ``batch``.
    ``metric="latency"`` needs ``profile_latency(mutator)`` first (``latency_fit.py``); ``max_ms``
    (latency only) bounds it in ms instead of ``keep``; ``mode="sensitivity"`` there too."""
    if metric == "latency":  # budgets in ms (latency_fit.py): needs profile_latency(mutator) first
        if mode == "sensitivity":
            return fit_latency_sensitivity_budget(mutator, sensitivity, None if max_ms else keep, max_ms)
        if mode not in LATENCY_MODES or sensitivity is not None:
            raise ValueError(f"metric='latency' works with mode {' or '.join(LATENCY_MODES)} or sensitivity, "
                             f"got {mode!r}")
        return fit_latency_budget(mutator, None if max_ms else keep, max_ms=max_ms, mode=mode,
                                  spread=_spread(mutator.mutable_units, mode))
    if max_ms is not None:
        raise ValueError(f"max_ms= is for metric='latency', not {metric!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    fitted = dict(seq_len=seq_len, batch=batch) if metric == "memory" else {}
    measure = metric_of(metric, seq_len, batch)
    if metric in MEMORY_METRICS:
        measure.value(mutator.resources())  # a clear error now for a model that has no such figure
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    if mode == "sensitivity":
        choices, res = fit_sensitivity_budget(mutator, keep, measure, sensitivity)
        return BudgetFit(choices, res, keep, metric, mode, **fitted)
    if mode == "measured":
        return _fit_measured(mutator, keep, measure, sensitivity, eval_fn, executor, calibration, steps, progress)
    if eval_fn is not None or executor is not None or calibration is not None or steps is not None:
        raise ValueError(f"eval_fn=, executor=, calibration= and steps= are for mode='measured', not {mode!r}")
    if sensitivity is not None:
        raise ValueError(f"sensitivity= is for mode='sensitivity', not {mode!r}")
    units = mutator.mutable_units
    spread = _spread(units, mode)
    if block_scores is not None:
        spread = with_blocks(spread, mutator, block_scores)
    lo, hi = 0.0, 1.0  # spread(level) uses more as level grows; find the largest level that fits
    best = spread(lo)
    best_res = mutator.resources(choices=best)
    top = spread(hi)
    top_res = mutator.resources(choices=top)
    if _value(top_res, measure) <= _limit(top_res, measure, keep):
        return BudgetFit(top, top_res, keep, metric, mode, **fitted)
    for _ in range(40):
        mid = (lo + hi) / 2
        choices = spread(mid)
        res = mutator.resources(choices=choices)
        if _value(res, measure) <= _limit(res, measure, keep):
            lo, best, best_res = mid, choices, res
        else:
            hi = mid
        if hi - lo < 1e-4:
            break
    return BudgetFit(best, best_res, keep, metric, mode, **fitted)


def _fit_measured(mutator: Any, keep: float, measure: Metric, sensitivity: Any, eval_fn: Any, executor: Any,
                  calibration: Any, steps: int | None, progress: Any) -> BudgetFit:
    if calibration is not None:
        from ..importance import calibrate
        calibrate(mutator, calibration)
    fitted = dict(seq_len=measure.seq_len, batch=measure.batch) if measure.name == "memory" else {}
    best, tried = fit_measured(partial(fit_budget, **fitted), mutator, keep, measure, eval_fn, sensitivity,
                               executor, **({} if steps is None else {"steps": steps}), progress=progress)
    return BudgetFit(best.choices, mutator.resources(choices=best.choices), keep, measure.name, "measured",
                     tuple(tried), best.score, **fitted)


def _value(res: Resources, metric: str | Metric) -> int:
    return metric_value(res, metric)


def _limit(res: Resources, metric: str | Metric, keep: float) -> float:
    return keep * original_value(res, metric)


def _spread(units: list[MutableChannelUnit], mode: str) -> Any:
    """``spread(level)`` of a what-if mode: uniform, global (group importance) or l1."""
    return _uniform(units) if mode == "uniform" else global_spread(units) if mode == "global" else _by_l1(units)


def _uniform(units: list[MutableChannelUnit]) -> Any:
    def spread(level: float) -> dict[Any, Any]:
        return {u.name: choice_for_fraction(u, level) for u in units}
    return spread


def _by_l1(units: list[MutableChannelUnit]) -> Any:
    """``spread(level)`` over one ranking of all channels by their L1 norm, normalised per unit
    (divided by the unit's mean, so that layers of different scales compare)."""
    scores = []
    for unit in units:
        imp = l1_importance(unit).numpy()
        mean = imp.mean() if len(imp) else 0.0
        scores.append(imp / mean if mean > 0 else np.ones_like(imp))
    return ranked_spread(units, scores)
