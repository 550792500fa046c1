"""Snap to fast counts: each unit's kept count moved to a count its latency step curve makes fast.

A unit's predicted latency over its counts (``unit_latency_curve``: the table's steps, the other
units as chosen) is flat within a step; a *fast count* ends a step (one channel more costs more,
or it is the full count): the most channels for that latency. Each unit's count goes to the end
of its step (channels for free, with ``up_when_free``) or down to the end of the step below
(faster). Units are snapped one after the other, each curve read with the earlier units already
snapped. The mutator's choices are as they were afterwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from typing import Any

from ..counting.latency_counter import mutator_latency, unit_latency_curve
from ..counting.latency_steps import DIVISORS
from ..mutables.unit_choices import choice_for_fraction

__all__ = ["SnappedCounts", "snap_to_fast_counts", "fast_counts", "step_divisor"]


@dataclass(frozen=True)
class SnappedCounts:
    """Choices snapped to fast counts: the choices, each changed unit's ``(before, after)`` kept
    count per block, each unit's step divisor, and the predicted ms before and after."""

    choices: dict[Any, Any]
    moved: dict[Any, tuple[int, int]]
    divisors: dict[Any, int]
    ms_before: float
    ms_after: float


def fast_counts(curve: list[float], tolerance: float = 1e-9) -> list[int]:
    """The counts ``1..full`` of ``curve`` (ms per count ``0..full``) that end a step: the next
    count costs more than ``tolerance`` (relative) more, or it is the full count."""
    full = len(curve) - 1
    return [c for c in range(1, full + 1) if c == full or curve[c + 1] > curve[c] * (1 + tolerance)]


def step_divisor(curve: list[float]) -> int:
    """The largest of ``DIVISORS`` that divides every fast count but the full one (1 if none does):
    the channel step of the unit's latency curve."""
    ends = fast_counts(curve)[:-1]
    step = reduce(math.gcd, ends, 0)
    fitting = [d for d in DIVISORS if step and step % d == 0]
    return fitting[-1] if fitting else 1


def _kept(unit: Any) -> int:
    return int(unit.current_mask.sum()) // unit.repeats


def _snapped(curve: list[float], k: int, up_when_free: bool, tolerance: float = 1e-9) -> int:
    ends = fast_counts(curve)
    if k in ends or k < 1:
        return k
    up = min(c for c in ends if c > k)
    if up_when_free and curve[up] <= curve[k] * (1 + tolerance):
        return up
    below = [c for c in ends if c < k]
    return below[-1] if below else up


def snap_to_fast_counts(mutator: Any, choices: dict | None = None, up_when_free: bool = True) -> SnappedCounts:
    """``choices`` (default: the current ones) with every unit's count snapped to a fast count (see
    the module docstring). Needs a latency table (``profile_latency``)."""
    units = mutator.mutable_units
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in units]
    try:
        if choices:
            mutator.set_choices(choices)
        before = mutator_latency(mutator).ms
        moved, divisors = {}, {}
        for unit in units:
            full = unit.num_channels // unit.repeats
            curve = unit_latency_curve(mutator, unit)
            divisors[unit.name] = step_divisor(curve)
            k = _kept(unit)
            target = _snapped(curve, k, up_when_free)
            if target != k:
                mutator.set_choices({unit.name: choice_for_fraction(unit, target / full)})
                if _kept(unit) != k:
                    moved[unit.name] = (k, _kept(unit))
        result = {u.name: u.current_choice for u in units}
        after = mutator_latency(mutator).ms
    finally:
        for mutable, state in saved:
            mutable.restore(state)
    return SnappedCounts(result, moved, divisors, before, after)
