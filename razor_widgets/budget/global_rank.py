"""The ``global`` budget: one ranking of every channel of every unit by group importance.

Each unit's scores are its group importance (``importance/group.py``: its own criterion for a
group unit, else group magnitude with ``p=2``, summed over the slices), divided by the unit's
mean, so that units of different scales compare. One threshold over all units then says how
many channels each unit keeps (never fewer than its divisor and minimum allow); which ones is
the unit type's business. The ``l1`` mode does the same with writer-only L1 norms.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..importance.group import group_magnitude_scores, normalize_scores
from ..mutables.unit_choices import choice_for_fraction
from ..mutables.units import MutableChannelUnit

__all__ = ["global_scores", "global_spread", "ranked_spread"]

GROUP_CRITERIA = ("group_magnitude", "group_taylor")


def global_scores(unit: MutableChannelUnit) -> np.ndarray:
    """The unit's channel scores as the global ranking compares them: group importance / its mean."""
    if getattr(unit, "criterion", None) in GROUP_CRITERIA:
        raw = unit.importance_cache().scores  # the unit's own (cached) group scores
        if getattr(unit, "normalize", None) != "gaussian":
            raw = normalize_scores(raw, "mean")  # mean and max: the same ranking; mean compares units
        return raw.numpy()
    return group_magnitude_scores(unit, p=2, reduction="sum", normalize="mean").numpy()


def global_spread(units: list[MutableChannelUnit]) -> Any:
    """``spread(level)`` over the global ranking (see :func:`ranked_spread`)."""
    return ranked_spread(units, [global_scores(u) for u in units])


def ranked_spread(units: list[MutableChannelUnit], scores: list[np.ndarray]) -> Any:
    """``spread(level)``: each unit keeps its channels whose score is at least the global
    threshold that ``level`` stands for (level 1 keeps all, level 0 the fewest)."""
    ordered = [np.sort(s) for s in scores]
    everything = np.sort(np.concatenate(ordered)) if ordered else np.zeros(0)

    def spread(level: float) -> dict[Any, Any]:
        if not len(everything):
            return {}
        index = min(len(everything) - 1, int((1.0 - level) * len(everything)))
        threshold = everything[index]
        choices = {}
        for unit, s in zip(units, ordered):
            kept = len(s) - int(np.searchsorted(s, threshold, side="left"))
            choices[unit.name] = choice_for_fraction(unit, kept / max(1, len(s)))
        return choices
    return spread
