"""The explorer's Plan history section: a table of the plans a person evaluated, fitted or
exported; a row's Restore button brings that plan back (one Undo step), and ticking Compare on
two rows colours the graph by their difference in kept channels and lists the differing units
with both plans' counts and scores side by side.
"""
from __future__ import annotations

import html
import os
import time
from typing import Any

import ipywidgets as widgets

from ..export.plans import HISTORY_KEY, parse_plan, read_json_plan
from .plan_entries import PlanComparison, PlanEntry, compare_entries, entries_from_json, entries_json

HISTORY_CLASS, ROW_CLASS, COMPARISON_CLASS = "rw-plan-history", "rw-plan-row", "rw-plan-comparison"
COMPARE_SCALE = "difference in kept channels (0.5: the same; 1: only A keeps them; 0: only B does)"
_CELL = "display:inline-block;padding:0 6px;font-family:monospace;white-space:pre"
_COLUMNS = (("when", 70), ("what", 80), ("Params", 80), ("MACs", 80), ("score", 70), ("kept channels", 150))


def _cells(values: list[str]) -> str:
    return "".join(f"<span style='{_CELL};width:{width}px'>{html.escape(v)}</span>"
                   for v, (_, width) in zip(values, _COLUMNS))


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.4g}"


class PlanHistoryView:
    """The section's widget (``widget``) over ``explorer.history.plans``; ``remember`` adds the
    explorer's current plan, ``restore`` and ``compare`` do what the row controls do."""

    def __init__(self, explorer: Any) -> None:
        self.explorer = explorer
        self.comparison: PlanComparison | None = None
        self.picked: list[int] = []  # entry numbers ticked for comparison, oldest first
        self._setting = False  # a Compare box set by code is not a person's tick
        self.rows = widgets.VBox()
        self.empty = widgets.HTML("<i>No plans yet: Evaluate, fit a budget or Export, and the plan is listed "
                                  "here.</i>")
        self.result = widgets.HTML()
        self.result.add_class(COMPARISON_CLASS)
        self.stop = widgets.Button(description="Stop comparing", disabled=True, layout=widgets.Layout(width="140px"))
        self.stop.on_click(lambda _: self.stop_comparing())
        header = widgets.HTML(f"<div style='margin-left:200px;font-weight:bold'>"
                              f"{_cells([c for c, _ in _COLUMNS])}</div>")
        self.widget = widgets.VBox([self.empty, header, self.rows, self.stop, self.result])
        self.widget.add_class(HISTORY_CLASS)
        self._shown: list[PlanEntry] = []

    @property
    def entries(self) -> list[PlanEntry]:
        """The plans tried (``explorer.history.plans``)."""
        return self.explorer.history.plans

    # -- adding entries -------------------------------------------------------------------
    def remember(self, action: str, score: float | None = None) -> PlanEntry:
        """Add the explorer's current plan as an entry (``action``: evaluated, fitted, exported);
        without a score, the score of an earlier entry of the same plan, if any."""
        explorer, res = self.explorer, self.explorer.resources()
        plan = explorer.session.plan()
        if score is None:
            score = next((e.score for e in reversed(self.entries) if e.plan == plan and e.score is not None), None)
        kept = {str(u.name): int(u.activated_channels) for u in explorer.mutator.mutable_units}
        entry = PlanEntry(len(self.entries) + 1, action, plan, kept, res.params, res.macs, res.original_params,
                          res.original_macs, score)
        self.entries.append(entry)
        self.show()
        return entry

    def add_loaded(self, entries: list[PlanEntry]) -> None:
        """Append entries read from a plan file (numbered after the ones here, times kept)."""
        start = len(self.entries)
        for i, entry in enumerate(entries):
            self.entries.append(PlanEntry(start + i + 1, entry.action, entry.plan, entry.kept, entry.params,
                                          entry.macs, entry.original_params, entry.original_macs, entry.score,
                                          entry.time))
        self.show()

    def plan_with_history(self) -> dict[str, Any]:
        """The plan file's object: the current plan and, under ``HISTORY_KEY``, the entries."""
        plan = self.explorer.session.plan()
        return {**plan, HISTORY_KEY: entries_json(self.entries)} if self.entries else plan

    @staticmethod
    def read_history(path: str | os.PathLike | None = None, text: str | bytes | None = None,
                     source: str = "<upload>") -> list[PlanEntry]:
        """The entries a plan file holds (none: []), from ``path`` or ``text``; PlanError if bad."""
        data = read_json_plan(path) if path is not None else parse_plan(text, source)
        where = os.fspath(path) if path is not None else source
        return entries_from_json(data[HISTORY_KEY], where) if HISTORY_KEY in data else []

    # -- the table ------------------------------------------------------------------------
    def show(self) -> None:
        """Bring the table in step with the entries (rows are added; a new history rebuilds it)."""
        entries = self.entries
        if self._shown != entries[:len(self._shown)]:
            self.rows.children, self._shown, self.picked = (), [], []
        new = [self._row(e) for e in entries[len(self._shown):]]
        if new:
            self.rows.children = (*self.rows.children, *new)
        self._shown = list(entries)
        self.empty.layout.display = "none" if entries else None

    def _row(self, entry: PlanEntry) -> widgets.HBox:
        restore = widgets.Button(description=f"Restore #{entry.number}", layout=widgets.Layout(width="110px"),
                                 tooltip="apply this plan again (one Undo step)")
        restore.on_click(self.explorer._clicked(lambda: self.restore(entry.number)))
        pick = widgets.Checkbox(value=False, description="compare", indent=False,
                                layout=widgets.Layout(width="80px"))
        pick.observe(lambda change: self._picked(entry.number, change["new"]), "value")
        kept, total = sum(entry.kept.values()), sum(self._channels().values())
        cells = _cells([time.strftime("%H:%M:%S", time.localtime(entry.time)), entry.action,
                        f"{entry.params_percent:.1f} %", f"{entry.macs_percent:.1f} %", _score(entry.score),
                        f"{kept:,}/{total:,}"])
        row = widgets.HBox([restore, pick, widgets.HTML(cells)])
        row.add_class(ROW_CLASS)
        return row

    def _channels(self) -> dict[str, int]:
        return {str(u.name): int(u.num_channels) for u in self.explorer.mutator.mutable_units}

    def _entry(self, number: int) -> PlanEntry:
        for entry in self.entries:
            if entry.number == number:
                return entry
        raise KeyError(f"no plan #{number} in the history (it has {len(self.entries)})")

    # -- restore and compare --------------------------------------------------------------
    def restore(self, number: int) -> PlanEntry:
        """Apply plan ``number`` again, as one Undo step; PlanError (nothing changes) if it no
        longer fits the model."""
        entry = self._entry(number)
        choices = self.explorer.session.apply_plan(entry.plan, f"history entry #{number}")
        self.explorer.set_choices(choices)
        self.explorer._say(f"restored plan #{number} ({entry.action} at "
                           f"{time.strftime('%H:%M:%S', time.localtime(entry.time))}); Undo goes back")
        return entry

    def compare(self, a: int, b: int) -> PlanComparison:
        """Compare plans ``a`` and ``b``: colour the graph by their difference in kept channels
        and show the units that differ with both plans' counts and scores."""
        comparison = compare_entries(self._entry(a), self._entry(b), self._channels())
        self.comparison = comparison
        self._set_picked([a, b])
        self.result.value = comparison_html(comparison)
        self.stop.disabled = False
        names = [str(u.name) for u in self.explorer.mutator.mutable_units]
        self.explorer.graph_view.colour_units(comparison.unit_values(names), COMPARE_SCALE)
        self.explorer.tabs.selected_index = 0  # the graph shows the difference
        return comparison

    def stop_comparing(self) -> None:
        """Back to the graph coloured by kept channels; no plan ticked."""
        self.comparison = None
        self._set_picked([])
        self.result.value = ""
        self.stop.disabled = True
        self.explorer.graph_view.colour_units(None)

    def _picked(self, number: int, on: bool) -> None:
        if self._setting:
            return
        picked = [n for n in self.picked if n != number] + ([number] if on else [])
        if len(picked) >= 2:
            self.compare(*picked[-2:])
        else:
            self._set_picked(picked)
            if self.comparison is not None:
                self.comparison = None
                self.result.value = ""
                self.explorer.graph_view.colour_units(None)

    def _set_picked(self, numbers: list[int]) -> None:
        self.picked = list(numbers)
        self._setting = True
        try:
            for entry, row in zip(self._shown, self.rows.children):
                box = row.children[1]
                if box.value != (entry.number in numbers):
                    box.value = entry.number in numbers
        finally:
            self._setting = False


def comparison_html(c: PlanComparison) -> str:
    """Counts and scores of both plans side by side, then every unit whose kept channels differ."""
    a, b = c.a, c.b
    th = "style='text-align:left;padding:2px 8px'"
    td = "style='text-align:right;padding:2px 8px;font-family:monospace'"
    rows = [("Params", f"{a.params:,} ({a.params_percent:.1f} %)", f"{b.params:,} ({b.params_percent:.1f} %)"),
            ("MACs", f"{a.macs:,} ({a.macs_percent:.1f} %)", f"{b.macs:,} ({b.macs_percent:.1f} %)"),
            ("score", _score(a.score), _score(b.score))]
    counts = "".join(f"<tr><th {th}>{label}</th><td {td}>{x}</td><td {td}>{y}</td></tr>" for label, x, y in rows)
    units = "".join(f"<tr><td style='padding:2px 8px'>{html.escape(d.unit)}</td><td {td}>{d.kept_a}/{d.channels}</td>"
                    f"<td {td}>{d.kept_b}/{d.channels}</td><td {td}>{d.difference:+d}</td></tr>" for d in c.units)
    head = (f"<tr><th {th}></th><th {th}>A: plan #{a.number} ({a.action})</th>"
            f"<th {th}>B: plan #{b.number} ({b.action})</th>")
    differing = (f"<p><b>{len(c.units)} units keep different channels</b></p><table class='rw-plan-units'>"
                 f"<tr><th {th}>unit</th><th {th}>A kept</th><th {th}>B kept</th><th {th}>A - B</th></tr>"
                 f"{units}</table>"
                 if c.units else "<p><b>The two plans keep the same channels in every unit.</b></p>")
    return f"<table class='rw-plan-counts'>{head}</tr>{counts}</table>{differing}"

