"""A unit's valid choice for a wanted fraction of its channels, in any choice mode.

Budgets (every mode), the sensitivity scan and the explorer's whole-model slider all turn fractions
into choices the same way; this is that one place.
"""
from __future__ import annotations

from typing import Any

from .units import MutableChannelUnit


def choice_for_fraction(unit: MutableChannelUnit, fraction: float) -> Any:
    """The unit's valid choice that keeps the fraction of its channels closest to ``fraction``
    (a ratio, a whole number of channels in steps of its divisor, or the nearest candidate)."""
    fraction = min(1.0, max(0.0, float(fraction)))
    candidates = getattr(unit, "candidate_choices", None)
    mode = getattr(unit, "choice_mode", "ratio")
    if candidates:
        scale = 1.0 if mode == "ratio" else float(unit.num_channels)
        return unit.validate_choice(min(candidates, key=lambda c: (abs(c / scale - fraction), -c)))
    if mode == "number":
        step = number_step(unit)
        kept = int(round(fraction * unit.num_channels / step)) * step
        kept = unit.num_channels if kept >= unit.num_channels else max(smallest_number(unit), kept)
        return unit.validate_choice(kept)
    return unit.validate_choice(max(float(unit.min_choice), fraction))


def number_step(unit: MutableChannelUnit) -> int:
    """The step between valid channel counts of a unit in number mode."""
    return unit.repeats * max(1, getattr(unit, "divisor", 1))


def smallest_number(unit: MutableChannelUnit) -> int:
    """The smallest valid channel count of a unit in number mode: ``min_choice`` rounded up to
    the step (a unit type of another package may give one off the step)."""
    step = number_step(unit)
    return min(unit.num_channels, -(-int(unit.min_choice) // step) * step)
