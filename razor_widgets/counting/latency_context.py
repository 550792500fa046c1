"""Layers timed in context: each layer's time inside whole forwards of an export, and the fit of
the alone-timed table to it.

A layer alone runs on an input the allocator has just handed back; inside the model its output
often lands on fresh pages (big activations: every page faults, several µs each in a VM), its
weights and inputs are cold. :func:`context_times` times every named leaf module inside whole
forwards (hooks); :func:`fit_context` fits, per layer (or per module called several times), its
time in context as ``a * alone + b * output elements`` over the calibration exports.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .latency_table import LatencyLayer

__all__ = ["context_times", "fit_context", "hook_overhead_ms"]

SCALE_RANGE = (0.5, 6.0)  # a layer's factor in context is clamped to this range


def _hooks(model: nn.Module, names: set[str], starts: dict[str, float],
           spent: dict[str, float]) -> list[Any]:
    handles = []
    for name, module in model.named_modules():
        if name not in names:
            continue

        def pre(_m: nn.Module, _a: Any, name: str = name) -> None:
            starts[name] = time.perf_counter()

        def post(_m: nn.Module, _a: Any, _o: Any, name: str = name) -> None:
            spent[name] += time.perf_counter() - starts[name]
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def hook_overhead_ms(runs: int = 200) -> float:
    """The ms a pair of timing hooks adds to one module call (measured on ``nn.Identity``)."""
    probe, x = nn.Identity(), torch.zeros(1)
    bare = min(_loop(lambda: probe(x), runs) for _ in range(3))
    spent: dict[str, float] = defaultdict(float)
    handles = _hooks(nn.Sequential(probe), {"0"}, {}, spent)
    try:
        hooked = min(_loop(lambda: probe(x), runs) for _ in range(3))
    finally:
        for h in handles:
            h.remove()
    return max(0.0, hooked - bare)


def _loop(fn: Callable[[], Any], runs: int) -> float:
    t0 = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - t0) / runs * 1000.0


def context_times(model: nn.Module, run: Callable[[], Any], names: set[str], forwards: int = 3,
                  overhead_ms: float = 0.0) -> dict[str, float]:
    """Median ms (over ``forwards`` calls of ``run()``, after one more to warm up) that each module
    named in ``names`` spends per forward, all its calls together, less the hooks' overhead."""
    starts: dict[str, float] = {}
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    handles = _hooks(model, names, starts, spent)
    per: dict[str, list[float]] = defaultdict(list)
    try:
        with torch.no_grad():
            run()
            for _ in range(max(1, forwards)):
                spent.clear()
                run()
                for name, seconds in spent.items():
                    per[name].append(seconds * 1000.0)
                    calls[name] += 1
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, values in per.items():
        n_calls = max(1, round(calls[name] / len(values)))
        out[name] = max(0.0, statistics.median(values) - overhead_ms * n_calls)
    return out


def _fit_pair(alone: np.ndarray, elements: np.ndarray, ctx: np.ndarray) -> tuple[float, float]:
    """Non-negative least squares of ``ctx = a * alone + b * elements`` (relative residuals), or of
    ``ctx = a * alone`` unless the element term clearly helps; ``a`` clamped to ``SCALE_RANGE``.
    ``(1, 0)`` when there is nothing to fit."""
    if len(ctx) < 2 or not alone.any():
        return 1.0, 0.0
    weights = 1.0 / np.maximum(ctx, 1e-6)

    def residual(a: float, b: float) -> float:
        return float(np.sum(((a * alone + b * elements - ctx) * weights) ** 2))
    lo, hi = SCALE_RANGE
    a_only = float(min(max((ctx * weights) @ (alone * weights) / ((alone * weights) @ (alone * weights)), lo), hi))
    best = (a_only, 0.0)
    if elements.any() and len(ctx) >= 3:
        matrix = np.stack([alone, elements], axis=1) * weights[:, None]
        a, b = np.linalg.lstsq(matrix, ctx * weights, rcond=None)[0]
        if a >= 0 and b >= 0 and residual(min(max(a, lo), hi), b) < 0.8 * residual(*best):
            best = (float(min(max(a, lo), hi)), float(b))
    return best


def fit_context(layers: list[LatencyLayer], points: list[tuple[list[int], dict[str, float]]]) -> int:
    """Set each layer's ``context_scale`` / ``context_per_element`` from ``points`` (the kept vector
    of a calibration export and its :func:`context_times`); layers of one module share the fit.
    Returns how many groups were fitted."""
    groups: dict[str, list[LatencyLayer]] = defaultdict(list)
    for layer in layers:
        if layer.context_name:
            groups[layer.context_name].append(layer)
    fitted = 0
    for name, members in groups.items():
        rows = [(sum(m.alone_ms(kept) for m in members), sum(m.stepped_elements(kept) for m in members),
                 times[name])
                for kept, times in points if name in times]
        if len(rows) < 2:
            continue
        alone, elements, ctx = (np.array(col, dtype=np.float64) for col in zip(*rows))
        a, b = _fit_pair(alone, elements, ctx)
        for m in members:
            m.context_scale, m.context_per_element = a, b
        fitted += 1
    return fitted
