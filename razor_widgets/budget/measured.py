"""The ``measured`` budget: the fit with the best *measured* score among its candidates.

No assumption that drops add up. The candidates are the other modes' fits (uniform, l1,
global, and sensitivity when a scan is given), then a progressive NetAdapt-style search: in
``steps`` equal steps of the budget, every unit proposes the smallest cut of its own that
meets the step's target, each proposal is evaluated through the masks (parallel over an
executor), and the best one is kept. At most ``candidates + units x steps`` evaluations, stated
up front on the progress bar. Every candidate's score comes back with the fit (docs/budgets.md).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..mutables.unit_choices import choice_for_fraction
from .candidate_eval import evaluate_all
from .metrics import Metric, metric_value, original_value

__all__ = ["MeasuredCandidate", "fit_measured", "DEFAULT_STEPS"]

DEFAULT_STEPS = 6
BASE_MODES = ("uniform", "l1", "global")


@dataclass(frozen=True)
class MeasuredCandidate:
    """One evaluated candidate: where it came from, its choices, its counts, its measured score."""

    name: str
    choices: dict[Any, Any]
    value: int  # the metric's count
    score: float
    met: bool


def fit_measured(fit: Callable[..., Any], mutator: Any, keep: float, metric: Metric, eval_fn: Any,
                 sensitivity: Any = None, executor: Any = None, steps: int = DEFAULT_STEPS,
                 progress: Any = False) -> tuple[Any, list[MeasuredCandidate]]:
    """The best measured candidate's fit (``fit`` is ``fit_budget``, for the other modes) and every
    candidate tried. A candidate that misses the budget is chosen only when none meets it."""
    if not callable(eval_fn):
        raise ValueError("mode='measured' needs eval_fn=, a function model -> score (higher is better)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    modes = list(BASE_MODES) + (["sensitivity"] if sensitivity is not None else [])
    fits = {m: fit(mutator, keep, metric.name, m, **({"sensitivity": sensitivity} if m == "sensitivity" else {}))
            for m in modes}
    units = [u for u in mutator.mutable_units if u.is_mutable]
    bar = _bar(progress, len(fits) + len(units) * steps)
    try:
        scores = evaluate_all(mutator, eval_fn, [f.choices for f in fits.values()], executor, bar)
        tried = [MeasuredCandidate(m, f.choices, metric_value(f.resources, metric), s, f.met)
                 for (m, f), s in zip(fits.items(), scores)]
        tried += _progressive(mutator, keep, metric, eval_fn, units, steps, executor, bar)
    finally:
        bar.close()
    met = [c for c in tried if c.met] or tried
    best = max(met, key=lambda c: (c.score, -c.value))
    return best, tried


def _progressive(mutator: Any, keep: float, metric: Metric, eval_fn: Any, units: list[Any], steps: int,
                 executor: Any, bar: Any) -> list[MeasuredCandidate]:
    """NetAdapt: from every unit full, ``steps`` times: each unit proposes its smallest cut that
    meets the step's target, all proposals are evaluated, the best one is kept."""
    current = {u.name: u.validate_choice(u.max_choice) for u in mutator.mutable_units}
    original = original_value(mutator.resources(choices=current), metric)
    tried: list[MeasuredCandidate] = []
    for step in range(1, steps + 1):
        target = original * (1.0 - (1.0 - keep) * step / steps)
        proposals = [p for u in units if (p := _proposal(mutator, metric, current, u, target)) is not None]
        if not proposals:
            break
        scores = evaluate_all(mutator, eval_fn, [c for c, _ in proposals], executor, bar)
        step_tried = [MeasuredCandidate(f"step {step}: {u}", c, v, s, v <= keep * original)
                      for (c, v), s, u in zip(proposals, scores, [_cut_unit(current, c) for c, _ in proposals])]
        tried += step_tried
        reached = [c for c in step_tried if c.value <= target] or step_tried
        current = dict(max(reached, key=lambda c: (c.score, -c.value)).choices)
    return tried


def _proposal(mutator: Any, metric: Metric, current: dict[Any, Any], unit: Any, target: float
              ) -> tuple[dict[Any, Any], int] | None:
    """``current`` with ``unit`` cut to its largest fraction that brings the metric to ``target``
    (or to its smallest choice when it cannot alone); None when it cannot be cut further."""
    def value(fraction: float) -> tuple[dict[Any, Any], int]:
        choices = {**current, unit.name: _canonical(unit, choice_for_fraction(unit, fraction))}
        return choices, metric_value(mutator.resources(choices=choices), metric)

    now = metric_value(mutator.resources(choices=current), metric)
    lowest = value(0.0)
    if lowest[1] >= now:
        return None
    if lowest[1] > target:
        return lowest
    lo, hi = 0.0, _fraction(unit, current[unit.name])
    for _ in range(12):  # the largest fraction that meets the target
        mid = (lo + hi) / 2
        if value(mid)[1] <= target:
            lo = mid
        else:
            hi = mid
    return value(lo)


def _canonical(unit: Any, choice: Any) -> Any:
    """The choice as the unit reports it once set (a ratio of 0.906 that keeps 29 of 32 is 29/32)."""
    saved = unit.mutable_channel.snapshot()
    try:
        unit.set_valid_choice(choice)
        return unit.current_choice
    finally:
        unit.mutable_channel.restore(saved)


def _fraction(unit: Any, choice: Any) -> float:
    return float(choice) if getattr(unit, "choice_mode", "ratio") == "ratio" else int(choice) / unit.num_channels


def _cut_unit(before: dict[Any, Any], after: dict[Any, Any]) -> str:
    changed = [name for name, choice in after.items() if before.get(name) != choice]
    return ", ".join(map(str, changed)) or "no change"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(progress: Any, total: int) -> Any:
    if callable(progress):
        class _Callback(_NoBar):
            done = 0

            def update(self, n: int) -> None:
                self.done += n
                progress(self.done, total)
        progress(0, total)
        return _Callback()
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"measured budget (at most {total} evaluations)", unit="eval")
