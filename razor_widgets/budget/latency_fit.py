"""Budgets in milliseconds: choices whose predicted latency keeps X % of the full model's, or N ms.

The same spreads as :func:`fit_budget` (``uniform``, ``l1``), searched with what-if latencies
(``mutator.latency(choices=...)``: a lookup in the table ``profile_latency`` measured, no forward).
``fit_budget(mutator, keep, metric="latency")`` comes here with its spread. Latency is a step
function of the counts, so the search finds a level that fits, not always the closest one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..counting.latency_table import Latency
from ..counting.resources import Resources
from ..mutables.unit_choices import choice_for_fraction

__all__ = ["LatencyBudgetFit", "fit_latency_budget", "LATENCY_MODES"]

LATENCY_MODES = ("uniform", "l1", "global")


@dataclass(frozen=True)
class LatencyBudgetFit:
    """A budget fit in milliseconds (the fields of ``BudgetFit`` and two more): ``latency`` is the
    predicted latency of the choices, ``max_ms`` the bound they were fitted to (``keep`` times the
    full model's, or as given)."""

    choices: dict[Any, Any]
    resources: Resources
    keep: float
    metric: str
    mode: str
    latency: Latency
    max_ms: float

    @property
    def met(self) -> bool:
        """Whether the predicted latency is at most ``max_ms``."""
        return self.latency.ms <= self.max_ms


def check_latency_bound(keep: float | None, max_ms: float | None) -> None:
    """ValueError unless exactly one bound is given: ``keep`` in (0, 1] or ``max_ms`` > 0."""
    if (keep is None) == (max_ms is None):
        raise ValueError("give keep (a fraction of the full model's latency) or max_ms, not both")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0):
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    if max_ms is not None and (isinstance(max_ms, bool) or not isinstance(max_ms, (int, float)) or max_ms <= 0):
        raise ValueError(f"max_ms must be a positive number, got {max_ms!r}")


def fit_latency_budget(mutator: Any, keep: float | None = None, max_ms: float | None = None,
                       mode: str = "uniform", spread: Callable[[float], dict] | None = None) -> LatencyBudgetFit:
    """Choices whose predicted latency is at most ``keep`` of the full model's, or at most
    ``max_ms`` (give one), as close to it as the units' choices allow; where even the smallest
    choices are slower, those are returned and ``met`` is False. The mutator's choices do not change.
    Needs a latency table (``profile_latency(mutator, ...)``). ``spread(level)`` gives the choices
    at a level in [0, 1] (``fit_budget`` passes its ``uniform`` or ``l1`` spread; default uniform)."""
    if mode not in LATENCY_MODES:
        raise ValueError(f"a latency budget's mode must be one of {', '.join(LATENCY_MODES)}, got {mode!r}")
    check_latency_bound(keep, max_ms)
    if spread is None:
        if mode != "uniform":
            raise ValueError(f"mode={mode!r} needs its spread: use fit_budget(mutator, keep, metric='latency', "
                             f"mode={mode!r})")
        units = mutator.mutable_units

        def spread(level: float) -> dict:
            return {u.name: choice_for_fraction(u, level) for u in units}
    top = spread(1.0)
    top_lat = mutator.latency(choices=top)
    bound = keep * top_lat.original_ms if keep is not None else float(max_ms)
    keep_fraction = keep if keep is not None else min(1.0, bound / top_lat.original_ms)

    def fit(choices: dict, lat: Latency) -> LatencyBudgetFit:
        return LatencyBudgetFit(choices, mutator.resources(choices=choices), keep_fraction, "latency", mode,
                                lat, bound)
    if top_lat.ms <= bound:
        return fit(top, top_lat)
    lo, hi = 0.0, 1.0
    best = spread(lo)
    best_lat = mutator.latency(choices=best)
    for _ in range(40):
        mid = (lo + hi) / 2
        choices = spread(mid)
        lat = mutator.latency(choices=choices)
        if lat.ms <= bound:
            lo, best, best_lat = mid, choices, lat
        else:
            hi = mid
        if hi - lo < 1e-4:
            break
    return fit(best, best_lat)
