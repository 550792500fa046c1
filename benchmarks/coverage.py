"""Coverage sweep: prepare, prune and export every torchvision classifier, and check the results.

For every model of ``torchvision.models.list_models(module=torchvision.models)`` (optionally also
the segmentation and detection models) with at most ``--max-params`` (200 M) parameters:

1. build it with ``weights=None`` and give it non-degenerate weights and norm statistics
   (``make_nontrivial`` of ``tests/conftest.py``: torchvision zero-initialises some heads and
   gammas, which would hide pruning errors), then put it in ``eval()`` BEFORE preparing, so the
   traced forward is the eval forward (GoogLeNet's and Inception's aux heads are unreached and
   neither pruned nor counted);
2. ``ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit")).prepare_from_supernet``
   (timed), recording the warnings it gives;
3. full choices: every output tensor bit-identical (``torch.equal``) to an unprepared deepcopy,
   and ``mutator.resources()`` equal to ``count_resources(original, x)`` (params and FLOPs);
4. three random choice sets (``random.seed(k)``, k = 0, 1, 2; ``mutator.sample_choices()``),
   each exported with ``to_static()`` (its own check on: the "export check" column says ok or gives the
   ``ExportError``): the static model must compute what the masked model
   computes (``torch.testing.assert_close``, rtol 1e-4, atol 1e-4 times the largest output
   magnitude) and what the zeroing oracle computes (``zeroed_model`` of ``tests/oracle.py``: the
   original with pruned channels zeroed where read; skipped where a LayerNorm or GroupNorm
   normalises over pruned channels, whose statistics zeroing changes), and
   ``mutator.resources()`` must equal ``count_resources(static, x)`` in params and FLOPs, with
   params also equal to ``sum(p.numel())`` of the static model;
5. back at full choices, the prepared model must again be bit-identical to the original.

Every exception is caught per model: its row says FAIL and why (the stage, the exception type and
the first line of its message, or the check that failed with its numbers); the sweep goes on.
All forwards run in eval mode under ``torch.no_grad()`` (the counts under ``count_resources``).

Input: 1x3x224x224 (``--size``), inception_v3 299; vit_*, swin* and maxvit* always 224 (their
patch grids need it). ``--fast`` tries 64x64 and falls back to the default where the model
rejects it.

Output: a table (model, params M, units found, mutable units, prepare seconds, warnings, seconds
for the whole model, result) on stdout and, as markdown with the machine, versions, date, total
time and the failures in full, in ``benchmarks/coverage.md`` (``--output``).

Run:  nice -n 10 python3 benchmarks/coverage.py [--models resnet18 vit_b_16] [--fast]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import io
import os
import platform
import random
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils._pytree import tree_flatten
from tqdm.auto import tqdm

from razor_widgets import ChannelMutator, ExportError, UnprunableChannelsWarning, count_resources

from common import quiet, versions

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_nontrivial  # noqa: E402  (the tests' helpers, reused as they are)
from oracle import zeroed_model  # noqa: E402

DEFAULT_OUTPUT = ROOT / "benchmarks" / "coverage.md"
DEFAULT_SIZE = 224
FAST_SIZE = 64
MAX_PARAMS_M = 200.0
REQUIRED_SIZE = {"inception_v3": 299}  # its native size (it accepts >= 75)
FIXED_224 = ("vit_", "swin", "maxvit")  # patch grids / window partitions need exactly 224
CHOICE_SETS = 3
RTOL = ATOL = 1e-4


@dataclass
class Spec:
    """One model to sweep: its name, the torchvision module it comes from and how to call it."""

    name: str
    family: str  # "classification", "segmentation" or "detection"

    @property
    def kwargs(self) -> dict[str, Any]:
        # segmentation and detection builders would download a backbone without weights_backbone
        return {"weights": None} if self.family == "classification" else {"weights": None,
                                                                           "weights_backbone": None}

    def build(self) -> nn.Module:
        return torchvision.models.get_model(self.name, **self.kwargs)

    def inputs(self, size: int) -> Any:
        gen = torch.Generator().manual_seed(2)
        if self.family == "detection":  # a list of CHW images, as the positional argument
            return ([torch.rand(3, size, size, generator=gen)],)
        return torch.randn(1, 3, size, size, generator=gen)


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


def count_params(spec: Spec) -> tuple[float, nn.Module | None]:
    """Params (M) without allocating, on the meta device; a real build where that fails
    (returned, so that it is not built twice)."""
    try:
        with quiet(), torch.device("meta"):
            model = spec.build()
        return sum(p.numel() for p in model.parameters()) / 1e6, None
    except Exception:
        torch.manual_seed(0)
        with quiet():
            model = spec.build()
        return sum(p.numel() for p in model.parameters()) / 1e6, model


def input_size(spec: Spec, args: argparse.Namespace) -> int:
    if spec.name.startswith(FIXED_224):
        return 224
    if args.fast:
        return FAST_SIZE
    if args.size is not None:
        return args.size
    return REQUIRED_SIZE.get(spec.name, DEFAULT_SIZE)


def flat(out: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def call(model: nn.Module, x: Any) -> list[torch.Tensor]:
    with torch.no_grad():
        return flat(model(*x) if isinstance(x, tuple) else model(x))


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


def oracle_blocker(mutator: ChannelMutator, original: nn.Module) -> str | None:
    """Why the zeroing oracle does not apply: a LayerNorm/GroupNorm reads pruned channels."""
    modules = dict(original.named_modules())
    for unit in mutator.mutable_units:
        for channel in unit.channels:
            module = modules.get(channel.name)
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                return type(module).__name__
    return None


def sweep_model(spec: Spec, args: argparse.Namespace, row: Row, prebuilt: nn.Module | None) -> None:
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


def _sweep(spec: Spec, args: argparse.Namespace, row: Row, prebuilt: nn.Module | None,
           stage: Callable[[str], None]) -> None:
    torch.manual_seed(0)
    if prebuilt is None:
        with quiet():
            prebuilt = spec.build()
    model = make_nontrivial(prebuilt).eval()  # eval BEFORE preparing: the eval forward is traced
    del prebuilt
    row.size = input_size(spec, args)
    x = spec.inputs(row.size)
    if args.fast and row.size != DEFAULT_SIZE and not spec.name.startswith(FIXED_224):
        stage("trial forward at fast size")
        try:
            with quiet():
                call(model, x)
        except Exception:
            row.size = REQUIRED_SIZE.get(spec.name, DEFAULT_SIZE)
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
        want = call(original, x)
        got = call(model, x)
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

    blocker = oracle_blocker(mutator, original)
    if blocker:
        row.notes.append(f"oracle skipped: {blocker} over pruned channels")
    if not mutator.mutable_units:
        row.notes.append("no mutable units")
    for k in range(CHOICE_SETS):
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
            masked = call(model, x)
        stage(f"{tag} static forward")
        with quiet():
            exported = call(static, x)
        problem = compare_close(exported, masked)
        if problem:
            row.failures.append(f"{tag}: exported vs masked: {problem}")
        del exported
        if not blocker:
            stage(f"{tag} oracle forward")
            oracle = zeroed_model(original, mutator)
            with quiet():
                zeroed = call(oracle, x)
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
        if not (counted.params == reference.params == kept) or counted.flops != reference.flops:
            row.failures.append(f"{tag}: count mismatch: params {counted.params:,} vs {reference.params:,} "
                                f"(static sum {kept:,}), FLOPs {counted.flops:,} vs {reference.flops:,} "
                                f"(FlopCounterMode)")
        del static
        gc.collect()

    row.export_check = row.export_check or "ok"
    stage("back to full choices")
    mutator.set_choices(mutator.max_choices)
    with quiet():
        got = call(model, x)
    problem = compare_exact(got, want)
    if problem:
        row.failures.append(f"after max_choices vs unprepared copy: {problem}")


def model_specs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Spec]:
    families = [("classification", torchvision.models)]
    if args.segmentation:
        families.append(("segmentation", torchvision.models.segmentation))
    if args.detection:
        families.append(("detection", torchvision.models.detection))
    specs = [Spec(name, family) for family, module in families
             for name in torchvision.models.list_models(module=module)]
    if args.models:
        wanted = [m for item in args.models for m in item.split(",") if m]
        known = {s.name: s for s in specs}
        for family, module in families[1:] + [("segmentation", torchvision.models.segmentation),
                                              ("detection", torchvision.models.detection)]:
            for name in torchvision.models.list_models(module=module):
                known.setdefault(name, Spec(name, family))  # named explicitly: no flag needed
        unknown = [m for m in wanted if m not in known]
        if unknown:
            parser.error(f"unknown torchvision model(s): {', '.join(unknown)}")
        specs = [known[m] for m in wanted]
    return specs


def table_rows(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    def fmt(value: Any, spec: str = "") -> str:
        return "-" if value is None else format(value, spec)

    columns = ["model", "params M", "input", "units", "mutable", "prepare s", "warnings", "total s", "export check",
               "result"]
    cells = []
    for r in rows:
        warn = len(r.unprunable_warnings) + len(r.other_warnings)
        cells.append([r.name + ("" if r.family == "classification" else f" ({r.family[:3]})"),
                      fmt(r.params_m, ".1f"), fmt(r.size), fmt(r.units), fmt(r.mutable), fmt(r.prepare_s, ".2f"),
                      "-" if r.skipped else str(warn), fmt(r.total_s, ".1f"), _short(r.export_check), r.result])
    return columns, cells


def _short(text: str | None, limit: int = 60) -> str:
    return "-" if text is None else text if len(text) <= limit else text[:limit - 3] + "..."


def print_table(rows: list[Row]) -> None:
    columns, cells = table_rows(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(columns)]
    last = len(columns) - 1

    def line(items: list[str]) -> str:
        return "  ".join(c if i == last else (c.ljust(w) if i == 0 else c.rjust(w))
                         for i, (c, w) in enumerate(zip(items, widths)))

    rule = "  ".join("-" * w for w in widths)
    print("\n".join(["", rule, line(columns), rule, *map(line, cells), rule]))


def summary(rows: list[Row]) -> tuple[int, int, int]:
    tested = [r for r in rows if not r.skipped]
    return sum(r.ok for r in tested), len(tested), len(rows) - len(tested)


def write_markdown(path: Path, rows: list[Row], args: argparse.Namespace, wall: float, header: list[str]) -> None:
    passed, tested, skipped = summary(rows)
    columns, cells = table_rows(rows)
    aligns = ["---" if i in (0, len(columns) - 1) else "---:" for i in range(len(columns))]
    out = ["# Coverage sweep: torchvision models through prepare, prune, export", ""]
    out += [f"Generated by `benchmarks/coverage.py` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.", ""]
    out += [f"- {h}" for h in header]
    out += [f"- command: `{' '.join(['python3 benchmarks/coverage.py', *sys.argv[1:]])}`",
            f"- total sweep time: {wall:.0f} s ({wall / 60:.1f} min)",
            f"- **{passed} of {tested}** models pass" + (f"; {skipped} skipped (over {args.max_params:g} M params)"
                                                        if skipped else ""), ""]
    out += ["Checks per model (all forwards in eval mode, under `torch.no_grad()`; the model is put in `eval()`",
            "before preparing, so GoogLeNet's and Inception's aux heads are unreached, not pruned and not counted):",
            "full-choice outputs bit-identical to an unprepared deepcopy and full-choice counts equal to",
            "`count_resources`; then for three random choice sets (`random.seed(k)`, L1 units) the `to_static()`",
            f"model close to the masked model (rtol {RTOL:g}, atol {ATOL:g} x output scale), the masked model close",
            "to the zeroing oracle (`tests/oracle.py`; skipped where a LayerNorm/GroupNorm normalises over pruned",
            "channels), `mutator.resources()` equal to `count_resources(static, x)` in params and FLOPs and params",
            "equal to `sum(p.numel())` of the static model; finally full choices bit-identical again.",
            "`export check`: `to_static()`'s own check (export vs masked model on the example input) on every set:",
            "`ok`, or the `ExportError` (in full under Failures).",
            "`warnings`: how many warnings `prepare_from_supernet` gave (details below); they do not fail a model.",
            "`total s`: the whole model, building and every check included.", ""]
    out += ["| " + " | ".join(columns) + " |", "| " + " | ".join(aligns) + " |"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    failing = [r for r in rows if not r.ok and not r.skipped]
    if failing:
        out += ["", "## Failures in full", ""]
        for r in failing:
            out.append(f"- **{r.name}**")
            if r.error:
                out.append(f"  - exception at {r.error}")
                if r.trace:
                    out += ["  ```", *[f"  {t}" for t in r.trace.splitlines()], "  ```"]
            out += [f"  - {f}" for f in r.failures]
    warned = [r for r in rows if r.unprunable_warnings or r.other_warnings]
    if warned:
        out += ["", "## Warnings from `prepare_from_supernet`", ""]
        for r in warned:
            out.append(f"- **{r.name}**")
            out += [f"  - UnprunableChannelsWarning: {w}" for w in dict.fromkeys(r.unprunable_warnings)]
            out += [f"  - {w}" for w in dict.fromkeys(r.other_warnings)]
    path.write_text("\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="restrict to these torchvision model names (comma or space separated); "
                             "segmentation/detection names are accepted without their flags")
    parser.add_argument("--segmentation", action="store_true", help="also sweep the segmentation models")
    parser.add_argument("--detection", action="store_true", help="also sweep the detection models")
    parser.add_argument("--size", type=int, default=None,
                        help=f"input height and width (default {DEFAULT_SIZE}, inception_v3 299); "
                             "vit_*, swin* and maxvit* always get 224")
    parser.add_argument("--fast", action="store_true",
                        help=f"input {FAST_SIZE}x{FAST_SIZE} where the model accepts it (else its default)")
    parser.add_argument("--max-params", type=float, default=MAX_PARAMS_M,
                        help="skip models with more parameters than this, in millions (default 200)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (default 2: a sweep of forwards, not a timing, so prepare "
                             "times are not comparable with bench_prepare.py's). Use 1 when something else keeps "
                             "a core busy: on a 2-core box two threads then made forwards 10-100x slower; "
                             "0 keeps torch's default")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="markdown file to write ('' writes none); default benchmarks/coverage.md")
    args = parser.parse_args(argv)
    specs = model_specs(args, parser)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    header = [f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
              versions(),
              f"threads {torch.get_num_threads()}, input 1x3xSxS with S = "
              + (f"{FAST_SIZE} (--fast; the default where refused)" if args.fast else
                 f"{args.size or DEFAULT_SIZE}" + ("" if args.size else " (inception_v3 299)"))
              + "; vit/swin/maxvit 224",
              "units: L1MutableChannelUnit; 3 random choice sets per model (random.seed(0..2))"]
    print("\n".join(header))
    print(f"{len(specs)} models\n", flush=True)

    rows: list[Row] = []
    wall = time.perf_counter()
    bar = tqdm(specs, unit="model", dynamic_ncols=True)
    for spec in bar:
        bar.set_postfix_str(spec.name)
        row = Row(spec.name, spec.family)
        start = time.perf_counter()
        prebuilt = None
        try:
            row.params_m, prebuilt = count_params(spec)
        except Exception as exc:
            row.error = f"build: {first_line(exc)}"
        if row.error is None and row.params_m > args.max_params:
            row.skipped = f"{row.params_m:.1f} M params > {args.max_params:g} M"
            prebuilt = None
        elif row.error is None:
            sweep_model(spec, args, row, prebuilt)
            prebuilt = None
        row.total_s = time.perf_counter() - start
        rows.append(row)
        tqdm.write(f"  {spec.name}: {row.result} [{row.total_s:.1f}s]")
        gc.collect()
    bar.close()
    wall = time.perf_counter() - wall

    print_table(rows)
    passed, tested, skipped = summary(rows)
    print(f"\n{passed} of {tested} models pass" + (f", {skipped} skipped" if skipped else "")
          + f"; total sweep time {wall:.0f} s ({wall / 60:.1f} min)")
    if args.output:
        write_markdown(Path(args.output), rows, args, wall, header)
        print(f"written to {args.output}")
    return 0 if passed == tested else 1


if __name__ == "__main__":
    sys.exit(main())
