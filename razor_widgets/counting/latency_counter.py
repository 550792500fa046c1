"""Live predicted latency of a prepared mutator: the latency table, looked up per slider move.

The resource counter already knows each unit's kept channels (and which units changed); this
counter re-evaluates only the layers of changed units in the table built by
:func:`profile_latency` and keeps a running sum, so a move costs microseconds and no forward.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .latency_table import Latency, LatencyTable
from .live_counter import ResourceCounter

__all__ = ["LatencyCounter", "mutator_latency"]


class LatencyCounter:
    """Predicted ms of the exported model at the mutator's current choices (no forward pass)."""

    def __init__(self, table: LatencyTable, counter: ResourceCounter) -> None:
        self.table = table
        self.counter = counter
        self._unit_layers = table.unit_layers(len(counter.units))
        full = [u.num_channels // u.repeats for u in counter.units] + [1]
        self.original_ms = table.predict(full)
        counter.update()
        self._kept = counter._kept.copy()
        self._layer_ms = [layer.ms(self._kept) for layer in table.layers]
        self._layer_el = [layer.elements(self._kept) for layer in table.layers]
        self._ms, self._el = sum(self._layer_ms), sum(self._layer_el)

    def update(self) -> None:
        """Bring the sum up to date with the units' current choices (only changed units' layers)."""
        self.counter.update()
        now = self.counter._kept
        changed = np.flatnonzero(now != self._kept)
        if not len(changed):
            return
        self._kept[changed] = now[changed]
        kept = self._kept
        layers = self.table.layers
        touched = {i for u in changed.tolist() if u < len(self._unit_layers) for i in self._unit_layers[u]}
        for i in touched:
            ms, el = layers[i].ms(kept), layers[i].elements(kept)
            self._ms += ms - self._layer_ms[i]
            self._el += el - self._layer_el[i]
            self._layer_ms[i], self._layer_el[i] = ms, el
        if len(touched) * 4 > len(layers):  # many changed: sum afresh (no drift from running sums)
            self._ms, self._el = sum(self._layer_ms), sum(self._layer_el)

    def ms(self) -> float:
        """Predicted ms at the current choices."""
        self.update()
        t = self.table
        return t.scale * self._ms + t.rest_ms + t.rest_ms_per_element * self._el

    def latency(self) -> Latency:
        """The prediction as a :class:`Latency` (with the full model's, the batch, threads, device)."""
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
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in (mutator.unit(key) for key in choices)]
    try:
        mutator.set_choices(choices)
        return counter.latency()
    finally:
        for mutable, state in saved:
            mutable.restore(state)
