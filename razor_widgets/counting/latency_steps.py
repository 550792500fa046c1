"""Cliffs: one unit's measured latency over its channel counts, and the divisor that removes them.

:func:`unit_step_curve` exports the layers and ops a unit changes at each count asked for (every
other unit full) and times them (the disk cache of :func:`profile_latency` is shared), so the
steps are measured, not interpolated. :func:`suggest_divisor` picks the smallest divisor whose
multiples never get faster by keeping more channels (beyond the stated noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .latency_cache import LatencyCache, entry_key, machine_key
from .latency_profile import _Profiler, timed_items
from .latency_table import form_value
from .latency_timing import fixed_threads

__all__ = ["StepCurve", "unit_step_curve", "suggest_divisor", "DIVISORS"]

DIVISORS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class StepCurve:
    """The measured ms of a unit's layers and ops at each kept count (others full), with the
    noise of those timings and the divisor :func:`suggest_divisor` suggests."""

    unit: str
    counts: list[int]
    ms: list[float]
    noise: float
    divisor: int

    def cliffs(self) -> list[tuple[int, int]]:
        """``(count, larger count)`` pairs where keeping more channels measured faster (beyond noise)."""
        out = []
        for i, (c, t) in enumerate(zip(self.counts, self.ms)):
            faster = [c2 for c2, t2 in zip(self.counts[i + 1:], self.ms[i + 1:]) if t2 < t * (1 - 2 * self.noise)]
            if faster:
                out.append((c, faster[-1]))
        return out


def suggest_divisor(counts: list[int], ms: list[float], noise: float, full: int,
                    candidates: tuple[int, ...] = DIVISORS) -> int:
    """The smallest divisor whose multiples (and ``full``) keep the curve rising with the count:
    no multiple is slower than a larger one by more than twice the noise. The largest candidate
    that fits under ``full`` when none does."""
    times = dict(zip(counts, ms))
    fitting = [d for d in candidates if d <= full] or [1]
    for d in fitting:
        allowed = sorted(c for c in times if c % d == 0 or c == full)
        if all(times[a] <= times[b] * (1 + 2 * noise) for i, a in enumerate(allowed) for b in allowed[i + 1:]):
            return d
    return fitting[-1]


def unit_step_curve(mutator: Any, unit: Any, counts: list[int] | None = None, batch_size: int = 1,
                    threads: int | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                    warmup: int = 3, repeats: int = 9, cache_dir: str | None = None) -> StepCurve:
    """Measure the latency of the layers and ops that ``unit`` (a name or a unit) changes at each
    of ``counts`` (kept channels per block; default: every count of the top 64, where a few pruned
    channels can make the model slower). Choices are as they were afterwards."""
    if not isinstance(unit, str):
        unit = unit.name
    index = [u.name for u in mutator.mutable_units].index(mutator.unit(unit).name)
    base = mutator.mutable_units[index].num_channels // mutator.mutable_units[index].repeats
    counts = sorted(set(counts if counts is not None else range(max(1, base - 63), base + 1)))
    if not counts or counts[0] < 1 or counts[-1] > base:
        raise ValueError(f"unit {unit!r}: counts must lie in [1, {base}]")
    threads = torch.get_num_threads() if threads is None else threads
    cache = LatencyCache(machine_key(device, threads, dtype), cache_dir)
    prof = _Profiler(mutator, batch_size, threads, device, dtype, "eager", cache, warmup, repeats, 1)
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in prof.units]
    totals = []
    try:
        with fixed_threads(threads):
            items = [(layer, build) for layer, build in timed_items(prof) if index in layer.units]
            for count in counts:
                kept = prof.set_kept({index}, count / base)
                total = 0.0
                for layer, build in items:
                    key = entry_key(layer.geometry, form_value(layer.in_form, kept), form_value(layer.out_form, kept))
                    hit = cache.get(key)
                    if hit is None:
                        hit = prof.time_fn(build(kept))
                        cache.put(key, hit)
                    total += layer.calls * hit["median_ms"]
                totals.append(total)
    finally:
        cache.save()
        for mutable, state in saved:
            mutable.restore(state)
    noises = sorted(prof.noises) or [0.0]
    noise = noises[len(noises) // 2]
    return StepCurve(unit, counts, totals, noise, suggest_divisor(counts, totals, noise, base))
