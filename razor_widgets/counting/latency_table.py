"""The latency table of a prepared model: per layer, measured ms over its kept channel counts.

A :class:`LatencyLayer` holds a grid of timings of one exported layer over the kept counts of its
input side and output side (or one axis, where both follow the same units); between grid points
the time is interpolated bilinearly (a layer's time is close to ``a + b*in + c*out + d*in*out``,
which bilinear interpolation reproduces). The model's predicted latency is the sum of its layers
measured whole exports calibrate: ``scale * layers + rest_ms + rest_ms_per_element * elements`` (a
layer runs slower among the others than alone, and a few ops are not in the table). Kept
counts are rounded up to the back end's channel step (``align``) first: between steps, time is flat.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .spec import Form

__all__ = ["LatencyLayer", "LatencyTable", "Latency", "interpolate", "REST_MODELS"]

REST_MODELS = ("quadratic", "scale", "elements", "constant")


def _axis_weights(axis: list[float], v: float) -> tuple[int, int, float]:
    """Indices ``i, j`` and weight ``w`` of ``v`` between ``axis[i]`` and ``axis[j]`` (linear
    extrapolation outside the axis)."""
    n = len(axis)
    if n == 1:
        return 0, 0, 0.0
    k = min(max(bisect.bisect_right(axis, v), 1), n - 1)
    lo, hi = axis[k - 1], axis[k]
    return k - 1, k, (v - lo) / (hi - lo)


def interpolate(xs: list[float], ys: list[float], table: list[list[float]], x: float, y: float) -> float:
    """Bilinear interpolation of ``table[i][j]`` (at ``xs[i], ys[j]``) at ``(x, y)``, never below 0."""
    i0, i1, wx = _axis_weights(xs, x)
    j0, j1, wy = _axis_weights(ys, y)
    r0 = table[i0][j0] + (table[i0][j1] - table[i0][j0]) * wy
    r1 = table[i1][j0] + (table[i1][j1] - table[i1][j0]) * wy
    return max(0.0, r0 + (r1 - r0) * wx)


def form_value(form: Form, kept: Any) -> int:
    """A side's kept size from the units' kept channels per block."""
    return form.const + sum(c * int(kept[u]) for u, c in form.coefs)


@dataclass
class LatencyLayer:
    """One layer's measured timings. ``mode``: ``grid`` (in x out), ``in`` / ``out`` (one side
    changes) or ``diag`` (both sides follow the same units; the axis is the output side)."""

    name: str
    geometry: str
    mode: str
    in_form: Form
    out_form: Form
    calls: int
    out_elements: int  # output elements per output channel (batch and positions)
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    table: list[list[float]] = field(default_factory=list)
    noise: float = 0.0
    align: int = 1  # counts between steps of ``align`` cost what the next step costs
    extra_units: tuple[int, ...] = ()  # units that change an op's other tensors (set with the axis's)
    context_name: str = ""  # the module timed in context (latency_context), "" for none
    context_scale: float = 1.0  # in context: context_scale * alone + context_per_element * elements
    context_per_element: float = 0.0

    @property
    def units(self) -> set[int]:
        """The units whose choice changes this layer's time."""
        return {u for u, _ in self.in_form.coefs} | {u for u, _ in self.out_form.coefs} | set(self.extra_units)

    def axes(self, kept: Any) -> tuple[float, float]:
        """The table coordinates at the units' kept channels."""
        if self.mode == "grid":
            return form_value(self.in_form, kept), form_value(self.out_form, kept)
        if self.mode == "in":
            return form_value(self.in_form, kept), 0
        return form_value(self.out_form, kept), 0

    def alone_ms(self, kept: Any) -> float:
        """Measured (interpolated) ms of this layer's calls timed alone at the units' kept channels."""
        x, y = self.axes(kept)
        return self.calls * interpolate(self.xs, self.ys, self.table, self.snap(x, self.xs), self.snap(y, self.ys))

    def ms(self, kept: Any) -> float:
        """Predicted ms of this layer's calls inside the model at the units' kept channels (alone,
        fitted to its time in context: see ``latency_context``)."""
        ms = self.alone_ms(kept)
        if self.context_scale == 1.0 and not self.context_per_element:
            return ms
        return self.context_scale * ms + self.context_per_element * self.stepped_elements(kept)

    def stepped_elements(self, kept: Any) -> float:
        """Output elements of this layer's calls at its output count rounded up like the times
        (``snap``): the context's cost per element keeps the steps of the curve."""
        out = form_value(self.out_form, kept)
        if self.mode != "in" and self.xs:
            out = self.snap(out, self.ys if self.mode == "grid" else self.xs)
        return self.calls * self.out_elements * out

    def snap(self, value: float, axis: list[float]) -> float:
        """``value`` rounded up to the next multiple of ``align`` (at most the axis's largest count)."""
        if self.align <= 1 or value >= axis[-1]:
            return value
        return min(axis[-1], -(-value // self.align) * self.align)

    def fast(self, bases: list[int]) -> tuple[Callable[[Any], float], Callable[[Any], int]]:
        """``(ms, elements)`` of this layer as functions of the kept vector, precomputed over every
        count of its units where each side follows one unit (a slider then reads a list)."""
        ms, elements = self.ms, self.elements
        axis = self.in_form if self.mode == "in" else self.out_form
        if self.mode != "grid" and len(axis.coefs) == 1 and set(self.extra_units) <= {axis.coefs[0][0]}:
            u = axis.coefs[0][0]
            kept_u = list(bases)
            curve = []
            for k in range(bases[u] + 1):
                kept_u[u] = k
                curve.append(self.ms(kept_u))

            def ms(kept: Any) -> float:
                return curve[kept[u]]
        elif self.mode == "grid" and len(self.in_form.coefs) == 1 and len(self.out_form.coefs) == 1:
            ms = self._fast_grid(bases)
        if len(self.out_form.coefs) == 1:
            (u_out, c_out), const_out = self.out_form.coefs[0], self.out_form.const
            per = self.calls * self.out_elements

            def elements(kept: Any) -> int:
                return per * (const_out + c_out * int(kept[u_out]))
        return ms, elements

    def _fast_grid(self, bases: list[int]) -> Callable[[Any], float]:
        (ui, ci), (uo, co) = self.in_form.coefs[0], self.out_form.coefs[0]

        def weights(form_const: int, c: int, base: int, axis: list[float]) -> list[tuple[int, int, float]]:
            return [_axis_weights(axis, self.snap(form_const + c * k, axis)) for k in range(base + 1)]
        wx = weights(self.in_form.const, ci, bases[ui], self.xs)
        wy = weights(self.out_form.const, co, bases[uo], self.ys)
        t, calls = self.table, self.calls * self.context_scale
        per = self.context_per_element * self.calls * self.out_elements
        outs = [self.snap(self.out_form.const + co * k, self.ys) for k in range(bases[uo] + 1)]

        def ms(kept: Any) -> float:
            i0, i1, a = wx[kept[ui]]
            j0, j1, b = wy[kept[uo]]
            r0 = t[i0][j0] + (t[i0][j1] - t[i0][j0]) * b
            r1 = t[i1][j0] + (t[i1][j1] - t[i1][j0]) * b
            return calls * max(0.0, r0 + (r1 - r0) * a) + per * outs[kept[uo]]
        return ms

    def elements(self, kept: Any) -> int:
        """Output elements of this layer's calls (what the ops after it touch)."""
        return self.calls * self.out_elements * form_value(self.out_form, kept)


@dataclass(frozen=True)
class Latency:
    """A predicted (or measured) latency with its full-choice figure and the setting it holds for."""

    ms: float
    original_ms: float
    batch_size: int
    threads: int
    device: str
    noise: float = 0.0

    @property
    def percent(self) -> float:
        """The latency as a percentage of the full model's."""
        return 100.0 * self.ms / self.original_ms if self.original_ms else 100.0

    def summary(self) -> str:
        """E.g. ``'12.3 ms (48 % of 25.6 ms; batch 1, 2 threads, cpu)'``."""
        return (f"{self.ms:.2f} ms ({self.percent:.0f} % of {self.original_ms:.2f} ms; batch "
                f"{self.batch_size}, {self.threads} thread{'s' if self.threads != 1 else ''}, {self.device})")

    def __str__(self) -> str:
        return self.summary()


@dataclass
class LatencyTable:
    """What :func:`profile_latency` built: the layers, the rest, the setting and the cost."""

    layers: list[LatencyLayer]
    batch_size: int
    threads: int
    device: str
    dtype: str
    backend: str
    rest_ms: float = 0.0
    rest_ms_per_element: float = 0.0
    scale: float = 1.0  # the layers' sum times this (fitted with rest="scale" or "quadratic")
    quad: float = 0.0  # ... plus this times layers * layers / full_layers (rest="quadratic")
    full_layers: float = 0.0  # the layers' sum at full choices
    rest: str = "quadratic"  # how the calibration was fitted: one of REST_MODELS
    measured: int = 0  # timings taken in this run
    cached: int = 0  # timings read from the cache
    seconds: float = 0.0  # what building the table cost
    noise: float = 0.0  # median noise of the layer timings (half the p10-p90 range over the median)
    model_noise: float = 0.0  # noise of the whole-model timings of the calibration
    calibration: list[dict[str, float]] = field(default_factory=list)
    cache_path: str = ""
    skipped: list[str] = field(default_factory=list)  # layers not timed (left to the calibration)
    calibration_dropped: list[int] = field(default_factory=list)  # calibration points the fit left out

    def layer_sum(self, kept: Any) -> tuple[float, int]:
        """Sum of the layers' ms and of their output elements at the units' kept channels."""
        return (sum(layer.ms(kept) for layer in self.layers),
                sum(layer.elements(kept) for layer in self.layers))

    def predict(self, kept: Any) -> float:
        """Predicted ms of the exported model at the units' kept channels per block."""
        return self.combine(*self.layer_sum(kept))

    def combine(self, ms: float, elements: float) -> float:
        """The calibrated prediction from the layers' sum and their output elements."""
        quad = self.quad * ms / self.full_layers if self.full_layers > 0 else 0.0
        return (self.scale + quad) * ms + self.rest_ms + self.rest_ms_per_element * elements

    def unit_layers(self, n_units: int) -> list[list[int]]:
        """Per unit, the indices of the layers whose time it changes."""
        out: list[list[int]] = [[] for _ in range(n_units)]
        for i, layer in enumerate(self.layers):
            for u in layer.units:
                out[u].append(i)
        return out

    def fit_rest(self, points: list[tuple[float, float, int]], rest: str = "quadratic") -> None:
        """Fit the calibration to ``(measured ms, layer sum ms, elements)`` points, least squares:
        ``rest="scale"``: ``measured = scale * layers + rest_ms``; ``"elements"``: ``measured = layers
        + rest_ms + rest_ms_per_element * elements``; ``"constant"``: ``measured = layers + rest_ms``.
        ``"quadratic"``: ``measured = (scale + quad * layers / full_layers) * layers + rest_ms`` (a layer
        slows down among the others the more, the bigger the model: allocations and caches).
        A fitted slope below 0 (noise) is dropped for a constant; the scale stays in [0.5, 3]."""
        if rest not in REST_MODELS:
            raise ValueError(f"rest must be one of {', '.join(REST_MODELS)}, got {rest!r}")
        measured = np.array([m for m, _, _ in points], dtype=np.float64)
        layers = np.array([s for _, s, _ in points], dtype=np.float64)
        elements = np.array([e for _, _, e in points], dtype=np.float64)
        self.rest, self.scale, self.rest_ms_per_element, self.quad = rest, 1.0, 0.0, 0.0
        self.full_layers = float(layers.max()) if len(points) else 0.0
        if rest == "quadratic" and len(points) >= 2 and self.full_layers > 0:
            self._fit_quadratic(measured, layers)
            return
        x = layers if rest == "scale" else elements
        if rest != "constant" and len(points) >= 2 and np.ptp(x) > 0:
            slope = float(np.polyfit(x, measured - (0 if rest == "scale" else layers), 1)[0])
            if rest == "scale":
                self.scale = min(3.0, max(0.5, slope))
            else:
                self.rest_ms_per_element = max(0.0, slope)
        fitted = self.scale * layers + self.rest_ms_per_element * elements
        self.rest_ms = float(np.mean(measured - fitted)) if len(points) else 0.0
        if self.rest_ms < 0 and rest == "scale" and layers.any():  # no negative rest: a scale alone
            self.scale = min(3.0, max(0.5, float(measured @ layers / (layers @ layers))))
            self.rest_ms = 0.0
        self.rest_ms = max(0.0, self.rest_ms)

    def _fit_quadratic(self, measured: np.ndarray, layers: np.ndarray) -> None:
        """Least squares of the *relative* residuals over ``[layers, layers**2 / full, 1]``; a
        negative rest, then a negative quadratic term, is dropped (never a negative coefficient).
        With five points or more, the one furthest off (over twice the others' largest) is dropped
        once and the fit repeated: one whole-model timing hit by a busy moment must not set it."""
        keep = np.ones(len(layers), dtype=bool)
        for attempt in range(2):
            values = _relative_fit(measured[keep], layers[keep], self.full_layers)
            if attempt:
                break
            fitted = ((values.get(0, 1.0) + values.get(1, 0.0) * layers / self.full_layers) * layers
                      + values.get(2, 0.0))
            off = np.abs(fitted - measured) / measured
            off[~keep] = 0.0
            worst = int(np.argmax(off))
            others = np.delete(off, worst)
            if keep.sum() < 5 or not len(others) or off[worst] <= 2 * others.max():
                break
            keep[worst] = False
        self.scale = min(3.0, values.get(0, 1.0))
        self.quad, self.rest_ms = max(0.0, values.get(1, 0.0)), max(0.0, values.get(2, 0.0))
        self.calibration_dropped = [i for i in range(len(keep)) if not keep[i]]


def _relative_fit(measured: np.ndarray, layers: np.ndarray, full: float) -> dict[int, float]:
    """``{column: coefficient}`` of the first non-negative weighted fit (weights 1 / measured)."""
    columns = [layers, layers * layers / full, np.ones_like(layers)]
    weights = 1.0 / np.maximum(measured, 1e-9)
    for use in ((0, 1, 2), (0, 2), (0, 1), (0,)):
        if len(use) > len(layers):
            continue
        matrix = np.stack([columns[i] for i in use], axis=1) * weights[:, None]
        coefs = np.linalg.lstsq(matrix, measured * weights, rcond=None)[0]
        if (coefs >= 0).all():
            break
    return dict(zip(use, coefs.tolist()))
