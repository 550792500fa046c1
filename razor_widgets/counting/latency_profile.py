"""Build a latency table by measurement: every pruned layer, exported at a grid of kept counts.

:func:`profile_latency` sets the units of each layer's sides to fractions of their channels, exports
that one layer (its dynamic op's ``to_static_op()``), and times it on inputs of the traced shapes at
the batch size, threads, device and dtype asked for. Timings go to an on-disk cache keyed by that
setting and the layer geometry, so identical layers are measured once and an interrupted profile
resumes where it stopped. Then eight whole exports are timed, whole and layer by layer in context,
to fit each layer and the rest (``latency_context``). Docs: docs/latency.md.
"""
from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers.dynamic_ops import DynamicChannelMixin
from .latency_cache import LatencyCache, entry_key, machine_key
from .latency_context import context_times, fit_context, hook_overhead_ms
from .latency_ops import op_items
from .latency_table import REST_MODELS, LatencyLayer, LatencyTable, form_value
from .latency_timing import CLOCKS, batched_inputs, fixed_threads, measure_latency, time_call
from .spec import _Builder

__all__ = ["profile_latency", "ProfileProgress", "LatencyProfileStopped", "GRID_POINTS", "LINE_POINTS",
           "CALIBRATION", "axis_counts"]

GRID_POINTS = 6  # counts per side of a layer whose two sides change (a 6 x 6 grid)
LINE_POINTS = 12  # counts of a layer with one changing side
CALIBRATION = (1.0, 0.7, 0.4, 0.2)  # uniform fractions whose whole exports calibrate the layers' sum
RANDOM_CALIBRATION = 4  # and this many fixed pseudo-random choice sets (each unit any count)
CONTEXT_FORWARDS = 3  # hooked forwards of each calibration export (its layers timed in context)
BACKENDS = ("eager", "compile")


@dataclass(frozen=True)
class ProfileProgress:
    """Where a profile stands: ``done`` of ``total`` timings (cached ones count as done)."""

    done: int
    total: int
    seconds: float
    layer: str

    @property
    def fraction(self) -> float:
        """``done / total`` (1 when there is nothing to do)."""
        return self.done / self.total if self.total else 1.0


class LatencyProfileStopped(RuntimeError):
    """Raised when ``should_stop()`` said stop; what was measured is in the cache: run again to resume."""


@dataclass
class _Call:
    """A leaf layer's first call: arguments as shapes, and its output size."""

    args: list[Any]
    kwargs: dict[str, Any]
    out_elements: int = 0
    calls: int = 0


def _spec_of(value: Any) -> Any:
    return ("tensor", tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else ("value", value)


def _capture(model: nn.Module, names: list[str], example_inputs: Any, batch_size: int) -> dict[str, _Call]:
    """One forward of the prepared model at ``batch_size``: each layer's argument shapes and output size."""
    calls: dict[str, _Call] = {}
    handles = []

    def hooks(name: str) -> tuple[Callable, Callable]:
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if name not in calls:
                calls[name] = _Call([_spec_of(a) for a in args], {k: _spec_of(v) for k, v in kwargs.items()})
            calls[name].calls += 1

        def post(module: nn.Module, args: tuple, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor) and not calls[name].out_elements:
                calls[name].out_elements = out.numel()
        return pre, post
    for name in names:
        pre, post = hooks(name)
        module = model.get_submodule(name)
        handles += [module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(post)]
    args, kwargs = batched_inputs(example_inputs, batch_size, next(model.parameters()).device)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return calls


def _leaves(model: nn.Module) -> list[str]:
    """Dynamic ops that export themselves (not MHA's out_proj, which its parent exports)."""
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, DynamicChannelMixin):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else None
        if isinstance(parent, DynamicChannelMixin) and child in parent.dynamic_children:
            continue
        out.append(name)
    return out


def axis_counts(full: int, align: int, most: int) -> list[int]:
    """At most ``most`` kept counts to time on a side of ``full`` channels: multiples of ``align``
    spread evenly from ``align`` to ``full``, and ``full`` itself."""
    steps = list(range(align, full, align)) + [full]
    if len(steps) <= most:
        return steps
    picks = sorted({round(i * (len(steps) - 1) / (most - 1)) for i in range(most)})
    return [steps[i] for i in picks]


def _mode(layer_in: set[int], layer_out: set[int]) -> str | None:
    if not layer_in and not layer_out:
        return None
    if layer_in and layer_out:
        return "grid" if not layer_in & layer_out else "diag"
    return "in" if layer_in else "out"


class _Profiler:
    """The state of one profile run: the mutator's units, the cache, and the progress counters."""

    def __init__(self, mutator: Any, batch_size: int, threads: int, device: str, dtype: torch.dtype,
                 backend: str, cache: LatencyCache, warmup: int, repeats: int, align: int) -> None:
        self.mutator, self.model, self.units = mutator, mutator.model, mutator.mutable_units
        self.batch_size, self.threads, self.device, self.dtype = batch_size, threads, device, dtype
        self.backend, self.cache, self.warmup, self.repeats = backend, cache, warmup, repeats
        self.align = align
        self.clock = "wall"
        self.builder = _Builder(self.model, mutator.graph_trace, mutator.analysis, self.units)
        self.bases = [u.num_channels // u.repeats for u in self.units]
        self.channel_dims: dict[str, int] = {}
        self.noises: list[float] = []
        self.skipped: list[str] = []  # layers left to the calibration (no kind, or no inputs at other sizes)
        self.measured = self.cached = 0

    def set_kept(self, units: set[int], fraction: float) -> list[int]:
        """Set ``units`` to ``fraction`` of their channels (at least one); the kept vector after."""
        for u in units:
            self.units[u]._set_kept(max(1, round(fraction * self.bases[u])))
        return self.kept()

    def kept(self) -> list[int]:
        """Kept channels per block of every unit, as the live counter reads them."""
        return [int(u.current_mask.sum()) // u.repeats for u in self.units]

    def layers(self, calls: dict[str, _Call]) -> list[tuple[LatencyLayer, nn.Module, _Call]]:
        """The measurable layers with their sides' forms and geometry."""
        builder = self.builder
        out = []
        for name, call in calls.items():
            module = self.model.get_submodule(name)
            kind = module.layer_kind
            if kind is None:  # an op without a kind of its own (its owner's kind counts it): the rest
                self.skipped.append(name)
                continue
            in_form = builder.layer_form(name, False, kind.channels(module, False))
            out_form = builder.layer_form(name, True, kind.channels(module, True))
            mode = _mode({u for u, _ in in_form.coefs}, {u for u, _ in out_form.coefs})
            if mode is None:
                continue
            full_out = max(1, form_value(out_form, self.bases))
            geometry = entry_key(repr(module.to_static_op()), type(module).__name__, call.args,
                                 sorted(call.kwargs.items()), mode, self.backend)
            layer = LatencyLayer(name, geometry, mode, in_form, out_form, call.calls,
                                 call.out_elements // full_out, align=self.align, context_name=name)
            out.append((layer, module, call))
        return out

    def points(self, layer: LatencyLayer) -> list[tuple[float, float]]:
        """The (input fraction, output fraction) pairs to time: multiples of ``align`` of each side."""
        full_in = max(1, form_value(layer.in_form, self.bases))
        full_out = max(1, form_value(layer.out_form, self.bases))
        if layer.mode == "grid":
            return [(i / full_in, o / full_out) for i in axis_counts(full_in, self.align, GRID_POINTS)
                    for o in axis_counts(full_out, self.align, GRID_POINTS)]
        full = full_in if layer.mode == "in" else full_out
        return [(c / full, c / full) for c in axis_counts(full, self.align, LINE_POINTS)]

    def inputs(self, layer: LatencyLayer, module: nn.Module, call: _Call, static: nn.Module,
               kept: list[int]) -> tuple[tuple, dict]:
        """Random inputs of the traced shapes with the channel dim cut to the kept input side."""
        full_in = module.layer_kind.channels(module, False)
        width = form_value(layer.in_form, kept)

        def make(spec: Any, dim: int | None) -> Any:
            if spec[0] != "tensor":
                return spec[1]
            shape = list(spec[1])
            if dim is not None and len(shape) > dim >= -len(shape) and shape[dim] == full_in:
                shape[dim] = width
            if spec[2].is_floating_point:
                return torch.randn(shape, device=self.device, dtype=self.dtype)
            return torch.zeros(shape, device=self.device, dtype=spec[2])
        if width == full_in:
            candidates: list[int | None] = [None]
        else:
            candidates = [self.channel_dims[layer.name]] if layer.name in self.channel_dims else [-1, 1, 2, 0, 3, 4]
        for dim in candidates:
            args = tuple(make(s, dim) for s in call.args)
            kwargs = {k: make(s, dim) for k, s in call.kwargs.items()}
            try:
                with torch.no_grad():
                    static(*args, **kwargs)
            except (RuntimeError, ValueError, AssertionError, IndexError):
                continue
            if dim is not None:
                self.channel_dims[layer.name] = dim
            return args, kwargs
        raise RuntimeError(f"cannot build inputs for layer {layer.name!r} with {width} input channels")

    def leaf_runner(self, layer: LatencyLayer, module: nn.Module, call: _Call) -> Callable[[list[int]], Callable]:
        """``build(kept)``: the layer exported at the current masks, with inputs, as a call to time."""
        def build(kept: list[int]) -> Callable[[], Any]:
            static = module.to_static_op().to(device=self.device, dtype=self.dtype).eval()
            args, kwargs = self.inputs(layer, module, call, static, kept)
            run = torch.compile(static) if self.backend == "compile" else static
            return lambda: run(*args, **kwargs)
        return build

    def time_fn(self, fn: Callable[[], Any]) -> dict[str, float]:
        """One timing (no grad; each point's sampling stops after a second)."""
        with torch.no_grad():
            timing = time_call(fn, self.device, self.warmup, self.repeats, max_seconds=1.0, clock=self.clock)
        self.noises.append(timing.noise)
        return timing.as_dict()


def _measure_layer(prof: _Profiler, layer: LatencyLayer, build: Callable[[list[int]], Callable[[], Any]],
                   tick: Callable[[str, bool], None]) -> None:
    """Fill ``layer``'s grid from the cache, timing the points it lacks."""
    ins = {u for u, _ in layer.in_form.coefs}
    outs = {u for u, _ in layer.out_form.coefs}
    every = layer.units
    values: dict[tuple[float, float], float] = {}
    for fi, fo in prof.points(layer):
        prof.set_kept(every, 1.0)
        if layer.mode == "grid":
            prof.set_kept(ins, fi)
            kept = prof.set_kept(outs, fo)
        else:
            kept = prof.set_kept(every, fi if layer.mode == "in" else fo)
        axes = layer.axes(kept)
        key = entry_key(layer.geometry, form_value(layer.in_form, kept), form_value(layer.out_form, kept))
        hit = prof.cache.get(key)
        if hit is None:
            hit = prof.time_fn(build(kept))
            prof.cache.put(key, hit)
            prof.measured += 1
        else:
            prof.cached += 1
        values[axes] = hit["median_ms"]
        tick(layer.name, hit is not None)
    prof.set_kept(every, 1.0)
    layer.xs = sorted({x for x, _ in values})
    layer.ys = sorted({y for _, y in values})
    layer.table = [[values.get((x, y), 0.0) for y in layer.ys] for x in layer.xs]
    if layer.mode == "grid" and len(values) != len(layer.xs) * len(layer.ys):  # fractions that round alike
        raise RuntimeError(f"layer {layer.name!r}: its grid of kept counts is not rectangular")


def _calibration_kept(prof: _Profiler, point: float) -> list[int]:
    """Set every unit for a calibration point (a uniform fraction, or -1, -2, ...: a fixed
    pseudo-random choice set with a seed of its own, never the caller's random sets)."""
    if point > 0:
        return prof.set_kept(set(range(len(prof.units))), point)
    rng = random.Random(7919 * -point)
    for u, base in enumerate(prof.bases):
        prof.units[u]._set_kept(rng.randint(1, base))
    return prof.kept()


def _time_export(prof: _Profiler, names: set[str], overhead_ms: float) -> tuple[dict, dict]:
    """The whole export at the current choices, timed (cached) and its layers timed in context."""
    static = prof.mutator.to_static(check=False)
    args, kwargs = batched_inputs(prof.mutator.example_inputs, prof.batch_size, prof.device, prof.dtype)
    key = entry_key("model", repr(static), [tuple(t.shape) for t in args if isinstance(t, torch.Tensor)],
                    prof.batch_size, prof.backend)
    hit, ctx = prof.cache.get(key), prof.cache.get(key + ":context")
    if hit is None or ctx is None:
        static = static.to(device=prof.device, dtype=prof.dtype).eval()
        if hit is None:
            run = torch.compile(static) if prof.backend == "compile" else static
            hit = measure_latency(run, prof.mutator.example_inputs, prof.batch_size, prof.threads, prof.device,
                                  prof.dtype, prof.warmup, prof.repeats, max_seconds=10.0, clock=prof.clock).as_dict()
            prof.cache.put(key, hit, save_every=1)
        if ctx is None:  # eager, hooked (no names: nothing to time in context)
            times = context_times(static, lambda: static(*args, **kwargs), names, CONTEXT_FORWARDS,
                                  overhead_ms) if names else {}
            ctx = {"median_ms": hit["median_ms"], "layers": times}
            prof.cache.put(key + ":context", ctx, save_every=1)
        prof.measured += 1
    else:
        prof.cached += 1
    return hit, ctx["layers"]


def _calibrate(prof: _Profiler, table: LatencyTable, tick: Callable[[str, bool], None] | None = None) -> None:
    """Time whole exports at the ``CALIBRATION`` fractions and at ``RANDOM_CALIBRATION`` fixed
    pseudo-random choice sets, each layer in them (``latency_context``), fit every layer's time
    in context to its time alone, then the layers' sum to the whole."""
    eager = prof.backend == "eager"  # a compiled graph has no modules to hook: its layers stay as timed alone
    names = {layer.context_name for layer in table.layers if layer.context_name} if eager else set()
    overhead = hook_overhead_ms() if eager else 0.0
    runs = []
    for point in CALIBRATION + tuple(-1 - i for i in range(RANDOM_CALIBRATION)):
        kept = _calibration_kept(prof, point)
        hit, times = _time_export(prof, names, overhead)
        runs.append((point, kept, hit, times))
        if tick is not None:
            tick("the whole model", False)
    fit_context(table.layers, [(kept, times) for _, kept, _, times in runs])
    points = []
    for point, kept, hit, _ in runs:
        ms, elements = table.layer_sum(kept)
        points.append((hit["median_ms"], ms, elements))
        noise = (hit["p90_ms"] - hit["p10_ms"]) / 2 / hit["median_ms"]
        table.model_noise = max(table.model_noise, noise)
        share = point if point > 0 else sum(k / b for k, b in zip(kept, prof.bases)) / max(1, len(prof.bases))
        table.calibration.append({"kind": "uniform" if point > 0 else "random", "fraction": share,
                                  "measured_ms": hit["median_ms"], "layers_ms": ms, "elements": elements})
    prof.set_kept(set(range(len(prof.units))), 1.0)
    table.fit_rest(points, prof.rest)


@contextlib.contextmanager
def compile_limits(backend: str) -> Iterator[None]:
    """With ``backend="compile"``: every exported layer is a new module to compile, so dynamo's
    recompile limits (after which it silently runs eager) are lifted for the profile."""
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    names = [n for n in ("recompile_limit", "accumulated_recompile_limit") if hasattr(config, n)]
    if backend != "compile" or not names:
        yield
        return
    with config.patch(**{n: 1 << 30 for n in names}):
        yield


def timed_items(prof: _Profiler) -> list[tuple[LatencyLayer, Callable[[list[int]], Callable[[], Any]]]]:
    """Every layer and op to time, with its builder (``build(kept)``: a call to time); sets the
    units full (the caller restores them)."""
    prof.set_kept(set(range(len(prof.units))), 1.0)
    calls = _capture(prof.model, _leaves(prof.model), prof.mutator.example_inputs, prof.batch_size)
    items = []
    for layer, module, call in prof.layers(calls):
        build = prof.leaf_runner(layer, module, call)
        try:  # a layer that cannot run at other sizes is left to the calibration, by name
            prof.set_kept(layer.units, 0.5)
            build(prof.kept())
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError):
            prof.skipped.append(layer.name)
            continue
        finally:
            prof.set_kept(layer.units, 1.0)
        items.append((layer, build))
    return items + op_items(prof, set(calls))


def profile_latency(mutator: Any, batch_size: int = 1, threads: int | None = None, device: str = "cpu",
                    backend: str = "eager", dtype: torch.dtype = torch.float32, warmup: int = 5,
                    repeats: int = 15, align: int = 16, rest: str = "quadratic", clock: str = "wall",
                    cache_dir: str | None = None,
                    progress: Callable[[ProfileProgress], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> LatencyTable:
    """Measure a latency table of the prepared ``mutator``'s model and give it to the mutator
    (``mutator.latency()`` reads it). The units' choices are as they were afterwards.

    Each pruned layer is exported at multiples of ``align`` channels on each changing side (at most
    ``GRID_POINTS`` per side, ``LINE_POINTS`` for one side) and timed (warm-up,
    ``repeats`` samples, median after outlier rejection); counts in between cost the next step's
    (``align``: the back end's channel step, 16 for fp32 on AVX-512). Eight whole exports calibrate
    the sum (``rest``: see ``LatencyTable.fit_rest``). ``clock="cpu"`` (threads=1 on a CPU) times
    CPU time instead of wall time (a busy machine). Timings are cached on disk by machine,
    torch version, device, threads, dtype, batch and layer geometry. ``progress`` is called after
    every timing; ``should_stop()`` returning True (or Ctrl-C) stops with what was measured saved."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if getattr(mutator, "graph_trace", None) is None or mutator.model is None:
        raise RuntimeError("profile_latency needs a mutator prepared by tracing (prepare_from_supernet)")
    threads = torch.get_num_threads() if threads is None else threads
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    cache = LatencyCache(machine_key(device, threads, dtype, clock), cache_dir)
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise ValueError(f"align must be a positive int, got {align!r}")
    if rest not in REST_MODELS:
        raise ValueError(f"rest must be one of {', '.join(REST_MODELS)}, got {rest!r}")
    prof = _Profiler(mutator, batch_size, threads, device, dtype, backend, cache, warmup, repeats, align)
    prof.rest, prof.clock = rest, clock
    started = time.perf_counter()
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in prof.units]
    try:
        with fixed_threads(threads), compile_limits(backend):
            layers = timed_items(prof)
            table = LatencyTable([layer for layer, _ in layers], batch_size, threads, str(device), str(dtype),
                                 backend, cache_path=str(cache.path))
            total = sum(len(prof.points(layer)) for layer, _ in layers) + len(CALIBRATION) + RANDOM_CALIBRATION
            done = 0

            def tick(name: str, _cached: bool) -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(ProfileProgress(done, total, time.perf_counter() - started, name))
                if should_stop is not None and should_stop():
                    raise LatencyProfileStopped(f"profile stopped after {done} of {total} timings; "
                                                "run profile_latency again to resume")
            for layer, build in layers:
                _measure_layer(prof, layer, build, tick)
            _calibrate(prof, table, tick)
            if progress is not None:
                progress(ProfileProgress(total, total, time.perf_counter() - started, "the whole model"))
    finally:
        cache.save()
        for mutable, state in saved:
            mutable.restore(state)
    noises = sorted(prof.noises)
    table.noise = noises[len(noises) // 2] if noises else 0.0
    table.measured, table.cached, table.seconds = prof.measured, prof.cached, time.perf_counter() - started
    table.skipped = list(prof.skipped)
    mutator.latency_table = table
    mutator.__dict__.pop("_latency_counter", None)
    return table
