"""The plans a person tried: one ``PlanEntry`` per plan evaluated, fitted or exported, and the
``PlanComparison`` of two of them (units whose kept channels differ, counts and scores side by side).

Entries travel in the plan file under ``HISTORY_KEY`` (``entries_json`` / ``entries_from_json``);
what is read back is checked as data and a bad entry raises ``PlanError``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..export.plans import PlanError

ACTIONS = ("evaluated", "fitted", "exported")
_COUNTS = ("params", "macs", "original_params", "original_macs")


@dataclass(frozen=True)
class PlanEntry:
    """One plan: ``plan`` (the plan file's form, ``{unit name: choice}``), ``kept`` channels per
    unit, the counts at that plan, its ``score`` (None when it was not scored), what was done
    (``action``) and when (``time``, seconds since the epoch); ``number`` counts from 1."""

    number: int
    action: str
    plan: dict[str, Any]
    kept: dict[str, int]
    params: int
    macs: int
    original_params: int
    original_macs: int
    score: float | None = None
    time: float = field(default_factory=time.time)

    @property
    def macs_percent(self) -> float:
        """MACs as a percentage of the original MACs."""
        return 100.0 * self.macs / self.original_macs if self.original_macs else 100.0

    @property
    def params_percent(self) -> float:
        """Params as a percentage of the original params."""
        return 100.0 * self.params / self.original_params if self.original_params else 100.0

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object (what the plan file holds)."""
        return {"number": self.number, "action": self.action, "time": self.time, "score": self.score,
                **{name: getattr(self, name) for name in _COUNTS}, "kept": dict(self.kept), "plan": dict(self.plan)}


def entries_json(entries: list[PlanEntry]) -> list[dict[str, Any]]:
    """The entries as a JSON list."""
    return [entry.to_json() for entry in entries]


def entries_from_json(data: Any, source: str) -> list[PlanEntry]:
    """Entries read from a plan file's ``HISTORY_KEY`` list; PlanError naming the first bad entry."""
    if not isinstance(data, list):
        raise PlanError(f"the plan {source!r}: its history must be a list, not a {type(data).__name__}")
    return [_entry(item, i, source) for i, item in enumerate(data)]


def _entry(item: Any, index: int, source: str) -> PlanEntry:
    def fail(what: str) -> PlanError:
        return PlanError(f"the plan {source!r}: history entry {index + 1} {what}")

    if not isinstance(item, dict):
        raise fail(f"is a {type(item).__name__}, not an object")
    if item.get("action") not in ACTIONS:
        raise fail(f"has the action {item.get('action')!r}; one of {', '.join(ACTIONS)} was expected")
    counts = {}
    for name in ("number", *_COUNTS):
        value = item.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"needs {name!r} as a whole number >= 0, got {value!r}")
        counts[name] = value
    score, when = item.get("score"), item.get("time")
    for name, value, optional in (("score", score, True), ("time", when, False)):
        if (value is None and not optional) or (value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value))):
            raise fail(f"needs {name!r} as a number{' or null' if optional else ''}, got {value!r}")
    plan, kept = item.get("plan"), item.get("kept")
    if not isinstance(plan, dict) or not isinstance(kept, dict):
        raise fail("needs 'plan' and 'kept' objects")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in kept.values()):
        raise fail("needs whole numbers of channels in 'kept'")
    return PlanEntry(action=item["action"], plan=plan, kept=kept, score=None if score is None else float(score),
                     time=float(when), **counts)


@dataclass(frozen=True)
class UnitDifference:
    """One unit whose kept channels differ between two plans (``channels``: the unit's total)."""

    unit: str
    kept_a: int
    kept_b: int
    channels: int

    @property
    def difference(self) -> int:
        """Channels plan A keeps more than plan B (negative: fewer)."""
        return self.kept_a - self.kept_b


@dataclass(frozen=True)
class PlanComparison:
    """Two plans side by side: ``units`` lists every unit whose kept channels differ."""

    a: PlanEntry
    b: PlanEntry
    units: list[UnitDifference]

    def unit_values(self, names: list[str]) -> list[float]:
        """Per unit in ``names`` order, the graph's colour value: 0.5 where the plans agree,
        towards 1 where A keeps more channels, towards 0 where B does."""
        by_name = {d.unit: d for d in self.units}
        return [0.5 + 0.5 * by_name[n].difference / by_name[n].channels if n in by_name and by_name[n].channels
                else 0.5 for n in names]


def compare_entries(a: PlanEntry, b: PlanEntry, channels: dict[str, int]) -> PlanComparison:
    """The units (of ``channels``: unit name -> its total) whose kept channels differ in ``a`` and ``b``."""
    units = [UnitDifference(name, a.kept.get(name, total), b.kept.get(name, total), total)
             for name, total in channels.items() if a.kept.get(name, total) != b.kept.get(name, total)]
    return PlanComparison(a, b, units)
