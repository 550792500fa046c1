"""The checks of the coverage sweeps: one model through prepare, prune and export.

``sweep_model(spec, args, row, prebuilt)`` fills a :class:`Row`. ``spec`` says how to build the
model, its input and which outputs to compare (``spec.raw_outputs``: module names whose outputs
are compared instead of the model's, for detection models, whose post-processing (NMS, top-k)
depends on values). See ``coverage.py`` for the list of checks.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import random
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from razor_widgets import ChannelMutator, ExportError, UnprunableChannelsWarning, count_resources, reference_flops

from common import quiet
from helpers import conv_with_own_forward, make_nontrivial, zeroed_model

CHOICE_SETS = 3
RTOL = ATOL = 1e-4


@dataclass
class Row:
    name: str
    family: str = "classification"
    params_m: float | None = None
    size: int | None = None
    units: int | None = None
    mutable: int | None = None
    prepare_s: float | None = None
    total_s: float | None = None
    unprunable_warnings: list[str] = field(default_factory=list)
    other_warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # checks that failed, in order
    error: str | None = None  # an exception: the stage and its first line
    trace: str | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    export_check: str | None = None  # "ok" when to_static()'s own check passed every set, else its ExportError

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.error is None and not self.failures

    @property
    def result(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        if self.error:
            return f"FAIL: {self.error}"
        if self.failures:
            more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return f"FAIL: {self.failures[0]}{more}"
        return "pass" + (f" ({'; '.join(self.notes)})" if self.notes else "")


def first_line(exc: BaseException, limit: int = 220) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    line = line if len(line) <= limit else line[:limit - 3] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def flat(out: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def call(model: nn.Module, x: Any, raw: list[str] | None = None) -> list[torch.Tensor]:
    """The output tensors of one forward; with ``raw``, the outputs of those modules instead
    (in that order), for models whose own output depends on values through NMS or top-k."""
    if not raw:
        with torch.no_grad():
            return flat(model(*x) if isinstance(x, tuple) else model(x))
    modules = dict(model.named_modules())
    captured: dict[str, Any] = {}
    hooks = [modules[name].register_forward_hook(
        lambda _m, _a, out, name=name: captured.setdefault(name, out)) for name in raw]
    try:
        with torch.no_grad():
            model(*x) if isinstance(x, tuple) else model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return [t for name in raw for t in flat(captured.get(name))]


def compare_exact(got: list[torch.Tensor], want: list[torch.Tensor]) -> str | None:
    """None when every tensor is bit-identical, else what differs."""
    if len(got) != len(want):
        return f"{len(got)} output tensors vs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"output {i} shape {tuple(g.shape)} vs {tuple(w.shape)}"
        if not torch.equal(g, w):
            diff = (g.double() - w.double()).abs().max().item() if g.is_floating_point() else "n/a"
            return f"output {i} not bit-identical (max abs diff {diff:.3g})" if isinstance(diff, float) \
                else f"output {i} not bit-identical"
    return None


def compare_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> str | None:
    """None when close (rtol 1e-4, atol 1e-4 x the largest magnitude of ``want``), else what differs."""
    if len(got) != len(want):
        return f"{len(got)} output tensors vs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"output {i} shape {tuple(g.shape)} vs {tuple(w.shape)}"
        if not w.is_floating_point():
            if not torch.equal(g, w):
                return f"output {i} ({w.dtype}) differs"
            continue
        scale = float(w.abs().max()) if w.numel() else 0.0
        scale = scale if scale > 0 else 1.0
        try:
            torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL * scale)
        except AssertionError:
            diff = float((g.double() - w.double()).abs().max())
            return f"output {i} max abs diff {diff:.3g} (output scale {scale:.3g})"
    return None


def raw_part_flops(mutator: ChannelMutator, static: nn.Module, x: Any, raw: list[str]) -> tuple[int, int]:
    """FLOPs of the modules in ``raw`` only: the mutator's per-layer count against
    FlopCounterMode on each exported module, called with the inputs it gets on ``x``."""
    by_layer = mutator.resources(by_layer=True)
    counted = sum(r.flops for name, r in by_layer.items() if any(name == p or name.startswith(p + ".") for p in raw))
    modules = dict(static.named_modules())
    inputs: dict[str, tuple] = {}
    hooks = [modules[name].register_forward_pre_hook(
        lambda _m, args, name=name: inputs.setdefault(name, args)) for name in raw]
    try:
        call(static, x)
    finally:
        for hook in hooks:
            hook.remove()
    with quiet():
        reference = sum(reference_flops(modules[name], inputs[name]) for name in raw)
    return counted, reference


def oracle_blocker(mutator: ChannelMutator, original: nn.Module) -> str | None:
    """Why the zeroing oracle does not apply: a LayerNorm/GroupNorm reads pruned channels, or a conv
    with its own forward (a weight standardised over its kept inputs) reads pruned inputs."""
    modules = dict(original.named_modules())
    for unit in mutator.mutable_units:
        for channel in unit.input_related:
            if conv_with_own_forward(modules.get(channel.name)):
                return f"{type(modules[channel.name]).__name__} (its own forward)"
    for unit in mutator.mutable_units:
        for channel in unit.channels:
            module = modules.get(channel.name)
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                return type(module).__name__
    return None


def sweep_model(spec: Any, args: argparse.Namespace, row: Row, prebuilt: nn.Module | None) -> None:
    """Run every check on one model, filling ``row``; exceptions propagate with ``stage`` set."""
    state = {"stage": "build"}

    def stage(name: str) -> None:
        state["stage"] = name

    try:
        _sweep(spec, args, row, prebuilt, stage)
    except Exception as exc:  # one line in the table, the traceback in the markdown details
        row.error = f"{state['stage']}: {first_line(exc)}"
        frames = traceback.extract_tb(exc.__traceback__)
        row.trace = "\n".join(f"{f.filename}:{f.lineno} in {f.name}" for f in frames[-5:])


def _sweep(spec: Any, args: argparse.Namespace, row: Row, prebuilt: nn.Module | None,
           stage: Callable[[str], None]) -> None:
    torch.manual_seed(0)
    if prebuilt is None:
        with quiet():
            prebuilt = spec.build()
    model = make_nontrivial(prebuilt).eval()  # eval BEFORE preparing: the eval forward is traced
    del prebuilt
    row.size = spec.input_size(args)
    x = spec.inputs(row.size)
    if row.size != spec.default_size():
        stage("trial forward at fast size")
        try:
            with quiet():
                call(model, x)
        except Exception:
            row.size = spec.default_size()
            x = spec.inputs(row.size)
    original = copy.deepcopy(model)

    stage("prepare")
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        start = time.perf_counter()
        mutator.prepare_from_supernet(model, example_inputs=x)
        row.prepare_s = time.perf_counter() - start
    for w in caught:
        text = str(w.message).splitlines()[0] if str(w.message) else w.category.__name__
        if issubclass(w.category, UnprunableChannelsWarning):
            row.unprunable_warnings.append(text)
        else:
            row.other_warnings.append(f"{w.category.__name__}: {text}")
    row.units, row.mutable = len(mutator.units), len(mutator.mutable_units)

    stage("full-choice forward")
    with quiet():
        want = call(original, x, spec.raw_outputs)
        got = call(model, x, spec.raw_outputs)
    problem = compare_exact(got, want)
    if problem:
        row.failures.append(f"full choices vs unprepared copy: {problem}")
    del got

    stage("full-choice counts")
    counted = mutator.resources()
    with quiet():
        reference = count_resources(original, x)
    if (counted.params, counted.flops) != (reference.params, reference.flops):
        row.failures.append(f"full-choice count mismatch: params {counted.params:,} vs {reference.params:,}, "
                            f"FLOPs {counted.flops:,} vs {reference.flops:,} (FlopCounterMode)")

    if spec.raw_outputs:
        row.notes.append(f"compared: raw outputs of {', '.join(spec.raw_outputs)}, FLOPs of "
                         f"{', '.join(spec.counted_modules)}; later FLOPs depend on the boxes of this input")
    blocker = oracle_blocker(mutator, original)
    if blocker:
        row.notes.append(f"oracle skipped: {blocker} over pruned channels")
    if not mutator.mutable_units:
        row.notes.append("no mutable units")
    sets = getattr(args, "choice_sets", CHOICE_SETS)
    if sets != CHOICE_SETS:
        row.notes.append(f"{sets} random choice set{'s' if sets != 1 else ''}")
    for k in range(sets):
        tag = f"set {k}"
        stage(f"{tag} set_choices")
        random.seed(k)
        mutator.set_choices(mutator.sample_choices())
        stage(f"{tag} to_static (checked)")
        try:
            static = mutator.to_static().eval()
        except ExportError as error:  # reported; the sweep's own checks still run on the unchecked export
            row.export_check = row.export_check or first_line(error, 2000)
            row.failures.append(f"{tag}: {first_line(error, 2000)}")
            static = mutator.to_static(check=False).eval()
        stage(f"{tag} masked forward")
        with quiet():
            masked = call(model, x, spec.raw_outputs)
        stage(f"{tag} static forward")
        with quiet():
            exported = call(static, x, spec.raw_outputs)
        problem = compare_close(exported, masked)
        if problem:
            row.failures.append(f"{tag}: exported vs masked: {problem}")
        del exported
        if not blocker:
            stage(f"{tag} oracle forward")
            oracle = zeroed_model(original, mutator)
            with quiet():
                zeroed = call(oracle, x, spec.raw_outputs)
            problem = compare_close(masked, zeroed)
            if problem:
                row.failures.append(f"{tag}: masked vs zeroing oracle: {problem}")
            del oracle, zeroed
        del masked
        stage(f"{tag} counts")
        counted = mutator.resources()
        with quiet():
            reference = count_resources(static, x)
        kept = sum(p.numel() for p in static.parameters())
        if spec.raw_outputs:  # FLOPs after the value-dependent steps depend on how many boxes survive
            counted_flops, reference_flops = raw_part_flops(mutator, static, x, spec.counted_modules)
        else:
            counted_flops, reference_flops = counted.flops, reference.flops
        if not (counted.params == reference.params == kept) or counted_flops != reference_flops:
            row.failures.append(f"{tag}: count mismatch: params {counted.params:,} vs {reference.params:,} "
                                f"(static sum {kept:,}), FLOPs {counted_flops:,} vs {reference_flops:,} "
                                f"(FlopCounterMode)")
        del static
        gc.collect()

    row.export_check = row.export_check or "ok"
    stage("back to full choices")
    mutator.set_choices(mutator.max_choices)
    with quiet():
        got = call(model, x, spec.raw_outputs)
    problem = compare_exact(got, want)
    if problem:
        row.failures.append(f"after max_choices vs unprepared copy: {problem}")
