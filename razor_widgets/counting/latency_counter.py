"""Live predicted latency of a prepared mutator: the latency table, looked up per slider move.

The resource counter already knows each unit's kept channels (and which units changed); this
counter re-evaluates only the layers of changed units in the table built by
:func:`profile_latency` and keeps a running sum, so a move costs microseconds and no forward.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .latency_blocks import choice_owner, combine_without, dropped_share
from .latency_table import Latency, LatencyTable
from .live_counter import ResourceCounter

__all__ = ["LatencyCounter", "mutator_latency", "unit_latency_curve"]


class LatencyCounter:
    """Predicted ms of the exported model at the mutator's current choices (no forward pass)."""

    def __init__(self, table: LatencyTable, counter: ResourceCounter) -> None:
        self.table = table
        self.counter = counter
        full = [u.num_channels // u.repeats for u in counter.units] + [1]
        self.original_ms = table.predict(full)
        counter.update()
        self._kept = counter._kept.tolist()  # Python ints: the closures below index them fast
        self._kept_array = counter._kept.copy()
        n_units = len(counter.units)
        # layers that follow one unit only are summed per unit into one curve over its counts
        solo: list[list[int]] = [[] for _ in range(n_units)]
        self._shared: list[list[int]] = [[] for _ in range(n_units)]  # the others, per unit
        for i, layer in enumerate(table.layers):
            units = layer.units
            if len(units) == 1 and layer.mode != "grid":
                solo[next(iter(units))].append(i)
            for u in units:
                if len(units) > 1 or layer.mode == "grid":
                    self._shared[u].append(i)
        self._curves = [self._curve(table, solo[u], u, full) if solo[u] else None for u in range(n_units)]
        self._fast = [layer.fast(full) for layer in table.layers]
        self._others = sorted({i for rows in self._shared for i in rows})
        self._layer_ms = {i: self._fast[i][0](self._kept) for i in self._others}
        self._layer_el = {i: self._fast[i][1](self._kept) for i in self._others}
        self._drag: tuple[int, list[float], list[int]] | None = None  # (unit, ms, elements) of a slider drag
        self._last: int | None = None  # the unit the last single move changed
        self._curves_base = [range(f + 1) for f in full[:n_units]]
        self._sum_afresh()

    @staticmethod
    def _curve(table: LatencyTable, layers: list[int], u: int, full: list[int]) -> tuple[list, list]:
        """(ms, elements) of ``layers`` (which follow unit ``u`` only) at each kept count of ``u``."""
        kept = list(full)
        ms, el = [], []
        for k in range(full[u] + 1):
            kept[u] = k
            ms.append(sum(table.layers[i].ms(kept) for i in layers))
            el.append(sum(table.layers[i].elements(kept) for i in layers))
        return ms, el

    def _sum_afresh(self) -> None:
        kept = self._kept
        curves = [(c[0][kept[u]], c[1][kept[u]]) for u, c in enumerate(self._curves) if c is not None]
        self._ms = sum(self._layer_ms.values()) + sum(m for m, _ in curves)
        self._el = sum(self._layer_el.values()) + sum(e for _, e in curves)

    def update(self) -> None:
        """Bring the sum up to date with the units' current choices (only changed units' layers).

        A slider drag moves one unit many times: from its second move on, the layers it shares
        with other units are summed into one curve over its counts (the others as they are), so
        each further move is a lookup; a move of any other unit ends the drag."""
        self.counter.update()
        now = self.counter._kept
        changed = np.flatnonzero(now != self._kept_array).tolist()
        if not changed:
            return
        if len(changed) == 1:
            self._kept_array[changed[0]] = now[changed[0]]
        else:
            self._kept_array[changed] = now[changed]
        kept = self._kept
        first_old = kept[changed[0]]
        for u in changed:
            new = int(now[u])
            curve = self._curves[u] if u < len(self._curves) else None
            if curve is not None:
                old = kept[u]
                self._ms += curve[0][new] - curve[0][old]
                self._el += curve[1][new] - curve[1][old]
            kept[u] = new
        single = changed[0] if len(changed) == 1 and changed[0] < len(self._shared) else None
        if single is not None and self._drag is not None and self._drag[0] == single:
            self._move_drag(first_old)
            return
        self._end_drag()
        if single is not None and single == self._last and self._shared[single]:
            self._start_drag(single)
            self._move_drag(first_old)
            return
        self._last = single
        fast, layer_ms, layer_el = self._fast, self._layer_ms, self._layer_el
        touched = self._shared[single] if single is not None else \
            sorted({i for u in changed if u < len(self._shared) for i in self._shared[u]})
        for i in touched:
            ms, el = fast[i][0](kept), fast[i][1](kept)
            self._ms += ms - layer_ms[i]
            self._el += el - layer_el[i]
            layer_ms[i], layer_el[i] = ms, el
        if len(changed) * 4 > len(self._curves):  # many changed: sum afresh (no drift from running sums)
            self._sum_afresh()

    def _start_drag(self, u: int) -> None:
        """Sum unit ``u``'s shared layers over its counts, the other units as they are now."""
        kept, fast, rows = list(self._kept), self._fast, self._shared[u]
        ms, el = [], []
        for k in range(len(self._curves_base[u])):
            kept[u] = k
            ms.append(sum(fast[i][0](kept) for i in rows))
            el.append(sum(fast[i][1](kept) for i in rows))
        self._drag = (u, ms, el)

    def _move_drag(self, old: int) -> None:
        """The drag's unit moved from ``old`` to its kept count now (the layers' entries wait)."""
        u, ms, el = self._drag
        new = self._kept[u]
        self._ms += ms[new] - ms[old]
        self._el += el[new] - el[old]

    def _end_drag(self) -> None:
        """Bring the dragged unit's shared layers' entries up to date and sum afresh."""
        if self._drag is None:
            return
        u, self._drag = self._drag[0], None
        kept = self._kept
        for i in self._shared[u]:
            self._layer_ms[i], self._layer_el[i] = self._fast[i][0](kept), self._fast[i][1](kept)
        self._sum_afresh()

    def ms(self) -> float:
        """Predicted ms at the current choices."""
        self.update()
        gone_ms, gone_el = dropped_share(self)  # dropped blocks' layers and ops (latency_blocks.py)
        return combine_without(self.table, self._ms, self._el, gone_ms, gone_el)

    def latency(self) -> Latency:
        """The prediction as a :class:`Latency` (with the full model's, the batch, threads, device);
        a dropped block's table entries leave the sum."""
        t = self.table
        return Latency(self.ms(), self.original_ms, t.batch_size, t.threads, t.device, t.noise)


def latency_counter(mutator: Any) -> LatencyCounter:
    """The mutator's latency counter, built on first use after :func:`profile_latency`."""
    counter = mutator.__dict__.get("_latency_counter")
    table = getattr(mutator, "latency_table", None)
    if table is None:
        raise RuntimeError("no latency table: run profile_latency(mutator, batch_size=..., threads=...) "
                           "first (it measures this model's layers on this machine)")
    if counter is None or counter.table is not table:
        counter = mutator.__dict__["_latency_counter"] = LatencyCounter(table, mutator.resource_counter())
    return counter


def mutator_latency(mutator: Any, choices: dict | None = None) -> Latency:
    """What ``ChannelMutator.latency`` returns; ``choices`` is a what-if that leaves every unit's
    choice as it was afterwards (also when it raises)."""
    counter = latency_counter(mutator)
    if choices is None:
        return counter.latency()
    if not isinstance(choices, dict):
        raise TypeError(f"choices must be a dict of unit name to choice, got {type(choices).__name__}")
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in (choice_owner(mutator, key) for key in choices)]
    try:
        mutator.set_choices(choices)
        return counter.latency()
    finally:
        for mutable, state in saved:
            mutable.restore(state)


def unit_latency_curve(mutator: Any, unit: Any) -> list[float]:
    """Predicted ms of the model at each kept count ``0..full`` (per block) of ``unit`` (a name or a
    unit), the other units as they are now: a lookup per count (the unit's layers only)."""
    counter = latency_counter(mutator)
    counter.update()
    counter._end_drag()
    names = [u.name for u in counter.counter.units]
    u = names.index(unit if isinstance(unit, str) else unit.name)
    kept, fast, rows = list(counter._kept), counter._fast, counter._shared[u]
    curve = counter._curves[u]
    rest_ms = counter._ms - sum(counter._layer_ms[i] for i in rows) - (curve[0][kept[u]] if curve else 0.0)
    rest_el = counter._el - sum(counter._layer_el[i] for i in rows) - (curve[1][kept[u]] if curve else 0)
    out = []
    for k in range(len(counter._curves_base[u])):
        kept[u] = k
        ms = rest_ms + sum(fast[i][0](kept) for i in rows) + (curve[0][k] if curve else 0.0)
        el = rest_el + sum(fast[i][1](kept) for i in rows) + (curve[1][k] if curve else 0)
        out.append(counter.table.combine(ms, el))
    return out
