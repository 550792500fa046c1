"""Coverage sweep: prepare, prune and export every torchvision (or timm) model, and check the results.

For every model of ``torchvision.models.list_models(module=torchvision.models)`` (optionally also
the segmentation and detection models) with at most ``--max-params`` (200 M) parameters:

1. build it with ``weights=None`` and give it non-degenerate weights and norm statistics
   (``make_nontrivial`` of ``tests/helpers.py``: torchvision zero-initialises some heads and
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
   magnitude) and what the zeroing oracle computes (``zeroed_model`` of ``tests/helpers.py``: the
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

Other tasks (``--task segmentation detection video``): segmentation models compare their dense
outputs; detection models compare, and count, the outputs of ``backbone`` and of the first head
(``rpn.head`` or ``head``), which come before every value-dependent step (proposals, NMS, top-k):
the FLOPs after them depend on how many boxes the input gives, so the totals hold for the example
input only. Video models get 1x3xTxSxS clips. ``--timm`` sweeps one timm model per architecture
family instead (``coverage_timm.py``). ``--timeout`` bounds each model, and the table is written
after every model (``--merge`` keeps earlier rows: re-run the failing ones into one table).

Output: a table (model, params M, units found, mutable units, prepare seconds, warnings, seconds
for the whole model, result) on stdout and, as markdown with the machine, versions, date, total
time and the failures in full, in ``benchmarks/coverage.md`` (``--output``).

Run:  nice -n 10 python3 benchmarks/coverage.py [--models resnet18 vit_b_16] [--fast]
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from tqdm.auto import tqdm

from common import quiet, versions

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from coverage_checks import ATOL, RTOL, Row, first_line, sweep_model  # noqa: E402  (needs tests/ on the path)

DEFAULT_OUTPUT = ROOT / "benchmarks" / "coverage.md"
DEFAULT_SIZE = 224
FAST_SIZE = 64
MAX_PARAMS_M = 200.0
REQUIRED_SIZE = {"inception_v3": 299}  # its native size (it accepts >= 75)
FIXED_224 = ("vit_", "swin", "maxvit")  # patch grids / window partitions need exactly 224


# detection models: the raw outputs of the first head are compared, and the FLOPs of the backbone
# and that head counted; both come before every value-dependent step (proposals, NMS, top-k)
DETECTION_HEADS = ("rpn.head", "head")
VIDEO_INPUT = (8, 112)  # frames, height and width (8 frames to keep a CPU sweep short)
VIDEO_FIXED = {"mvit_v1_b": (16, 224), "mvit_v2_s": (16, 224), "s3d": (16, 224)}  # what these accept
DETECTION_SIZE = 320  # the R-CNN, RetinaNet and FCOS transforms resize to this (min_size = max_size)
DETECTION_IMAGE = 128  # the side of the random image given to detection models


@dataclass
class Spec:
    """One torchvision model to sweep: its name, its task (the torchvision module it comes from)
    and how to build and call it."""

    name: str
    family: str  # "classification", "segmentation", "detection" or "video"
    raw_outputs: list[str] | None = None  # module outputs compared instead of the model's
    counted_modules: list[str] | None = None  # modules whose FLOPs are checked instead of the model's

    @property
    def kwargs(self) -> dict[str, Any]:
        # segmentation and detection builders would download a backbone without weights_backbone
        if self.family in ("classification", "video"):
            return {"weights": None}
        if self.family == "detection" and not self.name.startswith("ssd"):
            return {"weights": None, "weights_backbone": None, "min_size": DETECTION_SIZE,
                    "max_size": DETECTION_SIZE}
        return {"weights": None, "weights_backbone": None}

    def build(self) -> nn.Module:
        model = torchvision.models.get_model(self.name, **self.kwargs)
        if self.family == "detection":
            _one_nms_path(model)
            names = dict(model.named_modules())
            self.raw_outputs = [n for n in DETECTION_HEADS if n in names][:1]
            self.counted_modules = ["backbone", *self.raw_outputs]
        return model

    def default_size(self) -> int:
        if self.family == "video":
            return VIDEO_FIXED.get(self.name, VIDEO_INPUT)[1]
        if self.family == "detection":  # the model resizes it; at 224 the negated image used by
            return DETECTION_IMAGE      # the path check gave other ops (rows failed at prepare)
        if self.name.startswith(FIXED_224):
            return 224
        return REQUIRED_SIZE.get(self.name, DEFAULT_SIZE)

    def input_size(self, args: argparse.Namespace) -> int:
        if self.name.startswith(FIXED_224) or self.family in ("video", "detection"):
            return self.default_size()
        if args.fast:
            return FAST_SIZE
        return args.size if args.size is not None else self.default_size()

    def inputs(self, size: int) -> Any:
        gen = torch.Generator().manual_seed(2)
        if self.family == "detection":  # a list of CHW images, as the positional argument
            return ([torch.rand(3, size, size, generator=gen)],)
        if self.family == "video":
            return torch.randn(1, 3, VIDEO_FIXED.get(self.name, VIDEO_INPUT)[0], size, size, generator=gen)
        return torch.randn(1, 3, size, size, generator=gen)


def _one_nms_path(model: nn.Module) -> None:
    """Fixed box counts in post-processing (small top-k; score thresholds that keep every box, or,
    for the R-CNN box heads, none), so that NMS takes
    the same code path for every input (torchvision picks its algorithm by the number of boxes,
    and returns early on none), and the path check of ``prepare_from_supernet`` sees one path."""
    rpn = getattr(model, "rpn", None)
    if rpn is not None:
        rpn._pre_nms_top_n["testing"] = rpn._post_nms_top_n["testing"] = 100
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None:  # no box passes: the final NMS always returns early (the mask and
        roi_heads.score_thresh = 1.0  # keypoint heads then run on no box)
    if hasattr(model, "topk_candidates"):  # RetinaNet, FCOS, SSD
        model.score_thresh, model.topk_candidates = 0.0, 10


def count_params(spec: Any) -> tuple[float, nn.Module | None]:
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


TASKS = {"classification": "", "segmentation": "segmentation", "detection": "detection", "video": "video"}


def _task_module(task: str) -> Any:
    return getattr(torchvision.models, TASKS[task]) if TASKS[task] else torchvision.models


def model_specs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Any]:
    if args.timm:
        from coverage_timm import timm_specs  # only this sweep needs timm

        return timm_specs(args, parser)
    tasks = list(dict.fromkeys(args.task or ["classification"]))
    tasks += [t for t, flag in (("segmentation", args.segmentation), ("detection", args.detection))
              if flag and t not in tasks]
    specs = [Spec(name, task) for task in tasks for name in torchvision.models.list_models(module=_task_module(task))]
    if args.models:
        wanted = [m for item in args.models for m in item.split(",") if m]
        known = {s.name: s for s in specs}
        for task in TASKS:  # named explicitly: no flag needed
            for name in torchvision.models.list_models(module=_task_module(task)):
                known.setdefault(name, Spec(name, task))
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
        tag = r.family if r.family.startswith("timm") else r.family[:3]
        cells.append([r.name + ("" if r.family == "classification" else f" ({tag})"),
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
    what = "timm models (one per architecture family)" if args.timm else "torchvision models"
    out = [f"# Coverage sweep: {what} through prepare, prune, export", ""]
    out += [f"Generated by `benchmarks/coverage.py` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.", ""]
    out += [f"- {h}" for h in header]
    out += [f"- command: `{' '.join(['python3 benchmarks/coverage.py', *sys.argv[1:]])}`",
            f"- total sweep time: {wall:.0f} s ({wall / 60:.1f} min)",
            f"- **{passed} of {tested}** models pass" + (f"; {skipped} skipped (over {args.max_params:g} M params)"
                                                        if skipped else ""),
            f"- {sum(r.ok and bool(r.mutable) for r in rows)} of the {passed} that pass have at least one prunable "
            "unit (a model whose channels are all fixed passes the checks trivially)", ""]
    out += ["Checks per model (all forwards in eval mode, under `torch.no_grad()`; the model is put in `eval()`",
            "before preparing, so GoogLeNet's and Inception's aux heads are unreached, not pruned and not counted):",
            "full-choice outputs bit-identical to an unprepared deepcopy and full-choice counts equal to",
            f"`count_resources`; then for {args.choice_sets} random choice set(s) (`random.seed(k)`, L1 units) "
            "the `to_static()`",
            f"model close to the masked model (rtol {RTOL:g}, atol {ATOL:g} x output scale), the masked model close",
            "to the zeroing oracle (`tests/helpers.py`; skipped where a LayerNorm/GroupNorm normalises over pruned",
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


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="restrict to these model names (comma or space separated); torchvision names of "
                             "any task are accepted without --task, timm names with --timm")
    parser.add_argument("--task", nargs="+", choices=list(TASKS), metavar="TASK",
                        help=f"torchvision tasks to sweep (default classification): {', '.join(TASKS)}")
    parser.add_argument("--segmentation", action="store_true", help="also sweep the segmentation models")
    parser.add_argument("--detection", action="store_true", help="also sweep the detection models")
    parser.add_argument("--timm", action="store_true",
                        help="sweep one timm model per architecture family instead (coverage_timm.py)")
    parser.add_argument("--size", type=int, default=None,
                        help=f"input height and width (default {DEFAULT_SIZE}, inception_v3 299); "
                             "vit_*, swin* and maxvit* always get 224")
    parser.add_argument("--fast", action="store_true",
                        help=f"input {FAST_SIZE}x{FAST_SIZE} where the model accepts it (else its default)")
    parser.add_argument("--max-params", type=float, default=None,
                        help=f"skip models with more parameters than this, in millions (default {MAX_PARAMS_M:g}, "
                             "30 with --timm)")
    parser.add_argument("--choice-sets", type=int, default=3,
                        help="random choice sets checked per model (default 3; a row says when fewer)")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds one model may take before its row says FAIL: timeout (0: no limit)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (default 2: a sweep of forwards, not a timing, so prepare "
                             "times are not comparable with bench_prepare.py's). Use 1 when something else keeps "
                             "a core busy: on a 2-core box two threads then made forwards 10-100x slower; "
                             "0 keeps torch's default")
    parser.add_argument("--output", default=None,
                        help="markdown file to write ('' writes none); default benchmarks/coverage.md "
                             "(coverage_timm.md with --timm)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of earlier runs (from the .json beside the output) for models not "
                             "swept now: re-run the failing ones and get one table")
    args = parser.parse_args(argv)
    if args.max_params is None:
        args.max_params = 30.0 if args.timm else MAX_PARAMS_M
    if args.output is None:
        args.output = str(DEFAULT_OUTPUT.with_name("coverage_timm.md") if args.timm else DEFAULT_OUTPUT)
    return args, parser


class ModelTimeout(Exception):
    """A model ran past ``--timeout``."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise ModelTimeout("the model ran past --timeout")


def run_one(spec: Any, args: argparse.Namespace) -> Row:
    """Every check on one model, within ``--timeout`` seconds."""
    row = Row(spec.name, spec.family)
    start = time.perf_counter()
    if args.timeout:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        prebuilt = None
        try:
            row.params_m, prebuilt = count_params(spec)
        except Exception as exc:
            row.error = f"build: {first_line(exc)}"
        if row.error is None and row.params_m > args.max_params:
            row.skipped = f"{row.params_m:.1f} M params > {args.max_params:g} M"
        elif row.error is None:
            sweep_model(spec, args, row, prebuilt)
    except ModelTimeout:
        row.error = f"timeout after {args.timeout:g} s"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if row.error and "ModelTimeout" in row.error:
        row.error = f"timeout after {args.timeout:g} s ({row.error.split(':')[0]})"
    row.total_s = time.perf_counter() - start
    return row


def _saved_rows(path: Path) -> dict[str, Row]:
    if not path.exists():
        return {}
    return {d["name"]: Row(**d) for d in json.loads(path.read_text())}


def main(argv: list[str] | None = None) -> int:
    args, parser = parse_args(argv)
    specs = model_specs(args, parser)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    header = [f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
              versions(),
              f"threads {torch.get_num_threads()}, input 1x3xSxS with S = "
              + (f"{FAST_SIZE} (--fast; the default where refused)" if args.fast else
                 f"{args.size or DEFAULT_SIZE}" + ("" if args.size else " (inception_v3 299)"))
              + ("; timm: each model's default input size" if args.timm else
                 f"; vit/swin/maxvit 224; video 1x3xTxSxS with T, S = {VIDEO_INPUT} "
                 f"({', '.join(f'{k} {v}' for k, v in VIDEO_FIXED.items())}); detection: one 3x{DETECTION_IMAGE}x"
                 f"{DETECTION_IMAGE} image, "
                 f"resized by the model to {DETECTION_SIZE} (ssd: its own size)"),
              f"units: L1MutableChannelUnit; {args.choice_sets} random choice set(s) per model "
              f"(random.seed(0..{args.choice_sets - 1}); rows of merged earlier runs say when they had other counts)"]
    print("\n".join(header))
    print(f"{len(specs)} models\n", flush=True)
    saved = Path(args.output).with_suffix(".json") if args.output else None
    earlier = _saved_rows(saved) if saved and args.merge else {}
    swept: dict[str, Row] = {}
    wall = time.perf_counter()
    bar = tqdm(specs, unit="model", dynamic_ncols=True)
    for spec in bar:
        bar.set_postfix_str(spec.name)
        row = run_one(spec, args)
        swept[spec.name] = row
        tqdm.write(f"  {spec.name}: {row.result} [{row.total_s:.1f}s]")
        gc.collect()
        if args.output:  # after every model: a partial run is useful too
            rows = list({**earlier, **swept}.values())
            saved.write_text(json.dumps([asdict(r) for r in rows], indent=1))
            write_markdown(Path(args.output), rows, args, time.perf_counter() - wall, header)
    bar.close()
    wall = time.perf_counter() - wall
    rows = list({**earlier, **swept}.values())
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
