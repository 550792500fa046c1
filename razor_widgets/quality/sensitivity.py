"""Sensitivity: the score of the model with each unit alone pruned to each ratio.

``table[unit][ratio]`` is ``eval_fn`` of the model with ``unit`` at ``ratio`` (the kept
fraction of its channels, as in a choice) and every other unit full; ``baseline`` is the full
model's score. ``kept[unit][ratio]`` is the number of channels that choice keeps (ratios are
rounded to whole channels and the unit's divisor), so curves can be read against what was
really kept.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Sensitivity"]

CSV_FIELDS = ("unit", "ratio", "kept", "num_channels", "score")


@dataclass
class Sensitivity:
    """The result of :func:`sensitivity_scan` (see the module docstring for the fields)."""

    baseline: float
    table: dict[Any, dict[float, float]]
    kept: dict[Any, dict[float, int]] = field(default_factory=dict)
    num_channels: dict[Any, int] = field(default_factory=dict)

    @property
    def units(self) -> list[Any]:
        """The scanned units' names, in table order."""
        return list(self.table)

    @property
    def ratios(self) -> list[float]:
        """Every ratio of the table, ascending."""
        return sorted({r for row in self.table.values() for r in row})

    @property
    def evaluations(self) -> int:
        """How many eval_fn calls the scan made: units x ratios + 1 (the baseline)."""
        return sum(len(row) for row in self.table.values()) + 1

    def drop(self, unit: Any, ratio: float) -> float:
        """How much the score falls below the baseline with ``unit`` alone at ``ratio``."""
        return self.baseline - self.table[unit][ratio]

    def kept_fraction(self, unit: Any, ratio: float) -> float:
        """The fraction of the unit's channels really kept at ``ratio`` (the ratio itself when
        the channel counts are not known, as in a table written by hand)."""
        kept, total = self.kept.get(unit, {}).get(ratio), self.num_channels.get(unit)
        return ratio if kept is None or not total else kept / total

    def curve(self, unit: Any) -> tuple[np.ndarray, np.ndarray]:
        """The unit's measured drops against the kept fraction, ascending, with (1, 0) added."""
        points = {1.0: 0.0}
        for ratio in self.table[unit]:
            points[self.kept_fraction(unit, ratio)] = self.drop(unit, ratio)
        xs = np.array(sorted(points))
        return xs, np.array([points[x] for x in xs])

    def predicted_drop(self, unit: Any, fraction: float) -> float:
        """The drop predicted for ``unit`` keeping ``fraction`` of its channels: linear between
        the measured points; below the smallest, linear down to the table's worst drop at zero
        channels (a unit pruned away is assumed to hurt at least as much as anything measured)."""
        xs, ys = self.curve(unit)
        if fraction >= xs[0]:
            return float(np.interp(fraction, xs, ys))
        worst = max(self.worst_drop(), float(ys[0]))
        return float(ys[0] + (worst - ys[0]) * (xs[0] - fraction) / xs[0]) if xs[0] > 0 else float(ys[0])

    def worst_drop(self) -> float:
        """The largest drop below the baseline anywhere in the table (0 when nothing falls)."""
        return max([self.baseline - s for row in self.table.values() for s in row.values()] + [0.0])

    def mean_drop(self) -> dict[Any, float]:
        """Each unit's drop averaged over the ratios: one number per unit (colours, ranking)."""
        return {u: float(np.mean([self.baseline - s for s in row.values()])) if row else 0.0
                for u, row in self.table.items()}

    # -- files ----------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The table as CSV (columns unit, ratio, kept, num_channels, score; the baseline is the
        row with an empty unit). Written to ``path`` when given; the text is returned."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        writer.writerow(["", repr(1.0), "", "", repr(float(self.baseline))])
        for unit, row in self.table.items():
            for ratio, score in row.items():
                kept = self.kept.get(unit, {}).get(ratio, "")
                writer.writerow([unit, repr(float(ratio)), kept, self.num_channels.get(unit, ""),
                                 repr(float(score))])
        text = out.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_csv(cls, source: str | os.PathLike) -> Sensitivity:
        """Read what :meth:`to_csv` wrote, from a path or the CSV text itself (unit names come
        back as strings). Raises ValueError naming the line that does not fit."""
        text = source if isinstance(source, str) and "\n" in source else Path(source).read_text()
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or tuple(rows[0]) != CSV_FIELDS:
            raise ValueError(f"a sensitivity CSV starts with the header {','.join(CSV_FIELDS)}")
        baseline, table, kept, channels = None, {}, {}, {}
        for number, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != len(CSV_FIELDS):
                raise ValueError(f"line {number}: expected {len(CSV_FIELDS)} fields, got {len(row)}")
            unit, ratio, n_kept, n_channels, score = row
            try:
                if unit == "":
                    baseline = float(score)
                    continue
                table.setdefault(unit, {})[float(ratio)] = float(score)
                if n_kept:
                    kept.setdefault(unit, {})[float(ratio)] = int(n_kept)
                if n_channels:
                    channels[unit] = int(n_channels)
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None
        if baseline is None:
            raise ValueError("the sensitivity CSV has no baseline row (the row with an empty unit)")
        return cls(baseline, table, kept, channels)

    # -- plots ----------------------------------------------------------------------------
    def plot(self, kind: str = "curves", ax: Any = None, units: list | None = None) -> Any:
        """Per-unit curves (score against kept ratio, baseline dashed) or a ``"heatmap"`` of
        the drops, in matplotlib; returns the figure (drawn on ``ax`` when given)."""
        from .sensitivity_plot import plot_sensitivity  # matplotlib only when plotting
        return plot_sensitivity(self, kind, ax, units)
