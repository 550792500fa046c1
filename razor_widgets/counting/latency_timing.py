"""Timing discipline for latency: warm-up, repeats, median, outlier rejection and a noise figure.

:func:`time_call` times any callable (``perf_counter`` on CPU; CUDA events after a
synchronisation on a GPU, a path not yet run on a GPU here). :func:`measure_latency` times a real
model the same way at a batch size, thread count, device and dtype. Notes: docs/latency.md.
"""
from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..trace.tracer import split_inputs

__all__ = ["Timing", "time_call", "measure_latency", "batched_inputs", "fixed_threads", "CLOCKS"]


@dataclass(frozen=True)
class Timing:
    """One timed thing: the median in ms, the spread of the kept samples (p10, p90) and the noise.

    ``noise`` is the half-width of the p10-p90 range as a fraction of the median; ``rejected`` is how
    many samples fell outside ``median +- 4 * MAD`` and were dropped before the figures were taken."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    samples: int
    rejected: int
    calls_per_sample: int

    @property
    def noise(self) -> float:
        """Half the p10-p90 range over the median (0.02 = +-2 %)."""
        return (self.p90_ms - self.p10_ms) / 2 / self.median_ms if self.median_ms > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        """The fields as a JSON-ready dict (what the cache stores)."""
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms,
                "samples": self.samples, "rejected": self.rejected, "calls_per_sample": self.calls_per_sample}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(samples_ms: list[float], calls_per_sample: int = 1) -> Timing:
    """A :class:`Timing` of per-call samples in ms: outliers beyond ``median +- 4 * MAD`` dropped."""
    if not samples_ms:
        raise ValueError("no samples to summarise")
    med = statistics.median(samples_ms)
    mad = statistics.median([abs(s - med) for s in samples_ms]) or med * 1e-3
    kept = [s for s in samples_ms if abs(s - med) <= 4 * mad] or samples_ms
    return Timing(statistics.median(kept), _quantile(kept, 0.1), _quantile(kept, 0.9), len(kept),
                  len(samples_ms) - len(kept), calls_per_sample)


CLOCKS = ("wall", "cpu")


def _clock(device: torch.device, clock: str = "wall") -> Callable[[Callable[[], Any], int], float]:
    """``clock(fn, n)``: seconds for ``n`` calls of ``fn`` on ``device``: wall-clock time, or with
    ``clock="cpu"`` the calling thread's CPU time (one torch thread on a CPU: the time the work
    took without the time slices other processes of a busy machine took meanwhile)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise ValueError("clock='cpu' times one torch thread on a CPU: use threads=1 and device='cpu'")
    if device.type == "cuda":  # CUDA events after a synchronisation (untested here: no GPU)
        def cuda_clock(fn: Callable[[], Any], n: int) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0
        return cuda_clock

    now = time.thread_time if clock == "cpu" else time.perf_counter

    def cpu_clock(fn: Callable[[], Any], n: int) -> float:
        t0 = now()
        for _ in range(n):
            fn()
        return now() - t0
    return cpu_clock


def time_call(fn: Callable[[], Any], device: str | torch.device = "cpu", warmup: int = 5, repeats: int = 15,
              min_sample_s: float = 2e-4, max_seconds: float | None = None, clock: str = "wall") -> Timing:
    """Time ``fn()``: ``warmup`` runs (5 by default, at least 1), then ``repeats`` samples, each of enough calls
    to last ``min_sample_s`` (short calls are batched so the clock's resolution does not show).
    ``max_seconds`` stops sampling early (after 3 samples) for slow calls. ``clock``: see ``_clock``."""
    clock = _clock(torch.device(device), clock)
    first = clock(fn, 1)
    for _ in range(max(0, warmup - 1)):
        first = min(first, clock(fn, 1))
    calls = max(1, min(1000, math.ceil(min_sample_s / max(first, 1e-7))))
    samples, started = [], time.perf_counter()
    for i in range(max(3, repeats)):
        samples.append(clock(fn, calls) / calls * 1000.0)
        if max_seconds is not None and i >= 2 and time.perf_counter() - started > max_seconds:
            break
    return summarise(samples, calls)


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block (``None``: leave as is)."""
    before = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batched_inputs(example_inputs: Any, batch_size: int, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of the example inputs with every tensor of batch 1 repeated to
    ``batch_size`` along dim 0 (tensors of another batch are kept), on ``device``; floating
    tensors in ``dtype`` when given."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    def fit(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if value.dim() and value.shape[0] == 1 and batch_size != 1:
            value = value.repeat(batch_size, *([1] * (value.dim() - 1)))
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        return value.to(device)
    args, kwargs = split_inputs(example_inputs)
    return tuple(fit(a) for a in args), {k: fit(v) for k, v in kwargs.items()}


def measure_latency(model: nn.Module, example_inputs: Any, batch_size: int = 1, threads: int | None = None,
                    device: str = "cpu", dtype: torch.dtype | None = None, warmup: int = 5,
                    repeats: int = 15, max_seconds: float | None = None, clock: str = "wall") -> Timing:
    """Time one forward of ``model`` (eval, no grad) on ``example_inputs`` repeated to ``batch_size``.

    The model is not changed: it is copied when it must move to another device or dtype, and its
    train/eval mode is restored. Returns a :class:`Timing` (median ms, p10/p90, noise). ``clock="cpu"``
    (one thread on a CPU) times the thread's CPU time: a busy machine's other processes do not count."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"measure_latency needs an nn.Module, got {type(model).__name__}")
    dev = torch.device(device)
    params = list(model.parameters())
    moved = bool(params) and (params[0].device != dev or (dtype is not None and params[0].dtype != dtype))
    run = copy.deepcopy(model).to(device=dev, dtype=dtype) if moved else model
    args, kwargs = batched_inputs(example_inputs, batch_size, dev, dtype)
    training = run.training
    run.eval()
    try:
        with fixed_threads(threads), torch.no_grad():
            return time_call(lambda: run(*args, **kwargs), dev, warmup, repeats, max_seconds=max_seconds,
                             clock=clock)
    finally:
        run.train(training)
