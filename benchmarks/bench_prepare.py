"""Time razor_widgets' ``prepare_from_supernet`` against Torch-Pruning's dependency graph.

For each torchvision model (``weights=None``, input 1x3x224x224) both engines are timed in
the same run, interleaved per repetition so that machine noise hits both alike:

* razor:         ``ChannelMutator().prepare_from_supernet(model, example_inputs=x)``
* torch-pruning: ``DependencyGraph().build_dependency(model, example_inputs=x)`` followed by
  ``list(dg.get_all_groups())``

Every timed call gets its own ``copy.deepcopy`` of the model, made outside the timed region
(preparing mutates the model). One untimed warm-up run per engine and model comes first; the
reported figure is the median of ``--repeat`` timed runs.

Language-model rows (Llama-shaped, built on cpu and on the meta device, time and peak RSS,
each in a fresh process): ``python3 benchmarks/bench_prepare.py --lm`` (see ``lm_rows.py``); public
LLM shapes on meta (405B, DeepSeek-V3...): ``--lm-public`` (``lm_public_shapes.py``).

Run:  python3 -m pip install -e ".[bench]" && python3 benchmarks/bench_prepare.py
"""
from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision

import razor_widgets

from common import model_names, quiet, versions

try:
    import torch_pruning as tp

    TP_VERSION = importlib.metadata.version("torch-pruning")
except ImportError:  # a benchmark-only dependency: the razor side still runs without it
    tp = None
    TP_VERSION = "not installed"

BASE_MODELS = ["resnet50", "mobilenet_v2", "densenet121", "vit_b_16"]
STRESS_MODEL = "densenet201"
INPUT_SHAPE = (1, 3, 224, 224)


@dataclass
class EngineResult:
    """Timings and counts of one engine on one model."""

    times: list[float] = field(default_factory=list)
    nodes: int | None = None  # traced ops (razor) / graph nodes (torch-pruning)
    units: int | None = None  # mutable units (razor) / groups (torch-pruning)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


@dataclass
class ModelResult:
    name: str
    params_m: float
    razor: EngineResult = field(default_factory=EngineResult)
    tp: EngineResult | None = None


def run_razor(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    mutator = razor_widgets.ChannelMutator()
    mutator.prepare_from_supernet(model, example_inputs=x)
    return len(mutator.graph_trace.nodes), len(mutator.mutable_units)


def run_tp(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    groups = list(dg.get_all_groups())
    return len(dg.module2node), len(groups)


def timed(engine: Callable[[torch.nn.Module, torch.Tensor], tuple[int, int]],
          base: torch.nn.Module, x: torch.Tensor) -> tuple[float, tuple[int, int]]:
    """One run of ``engine`` on a fresh copy of ``base``; only the engine call is timed."""
    model = copy.deepcopy(base)
    gc.collect()
    with quiet():
        start = time.perf_counter()
        counts = engine(model, x)
        elapsed = time.perf_counter() - start
    del model
    return elapsed, counts


def attempt(result: EngineResult, engine: Callable, base: torch.nn.Module, x: torch.Tensor,
            record: bool) -> None:
    """Run once, recording the time (unless a warm-up) or the error; skip after an error."""
    if result.error is not None:
        return
    try:
        elapsed, (nodes, units) = timed(engine, base, x)
    except Exception as exc:  # report and carry on with the other engine
        frames = traceback.extract_tb(exc.__traceback__)
        where = "\n".join(f"    {f.filename}:{f.lineno} in {f.name}" for f in frames[-4:])
        result.error = f"{type(exc).__name__}: {exc}\n{where}"
        return
    result.nodes, result.units = nodes, units
    if record:
        result.times.append(elapsed)


def bench_model(name: str, repeat: int, x: torch.Tensor) -> ModelResult:
    with quiet():
        base = getattr(torchvision.models, name)(weights=None).eval()
    res = ModelResult(name, sum(p.numel() for p in base.parameters()) / 1e6)
    engines: list[tuple[EngineResult, Callable]] = [(res.razor, run_razor)]
    if tp is not None:
        res.tp = EngineResult()
        engines.append((res.tp, run_tp))
    for result, engine in engines:  # warm-up, untimed
        attempt(result, engine, base, x, record=False)
    for rep in range(repeat):
        # Interleave, alternating which engine goes first, so drift hits both sides alike.
        order = engines if rep % 2 == 0 else engines[::-1]
        for result, engine in order:
            attempt(result, engine, base, x, record=True)
    return res


def fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[ModelResult], repeat: int) -> None:
    have_tp = tp is not None
    columns = ["model", "params M", "razor ops", "tp nodes", "razor s", "tp s", "tp/razor",
               "razor units", "tp groups"]
    rows = []
    for r in results:
        t = r.tp or EngineResult()
        ratio = t.median / r.razor.median if (t.median and r.razor.median) else None
        rows.append([r.name, fmt(r.params_m, ".1f"), fmt(r.razor.nodes), fmt(t.nodes),
                     fmt(r.razor.median, ".3f"), fmt(t.median, ".3f"), fmt(ratio, ".2f"),
                     fmt(r.razor.units), fmt(t.units)])
    if not have_tp:
        keep = [i for i, h in enumerate(columns) if not h.startswith("tp")]
        columns = [columns[i] for i in keep]
        rows = [[row[i] for i in keep] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    note = "; tp/razor > 1 means razor is faster" if have_tp else ""
    print(f"\nprepare time, median of {repeat} runs (seconds{note})")
    print("\n".join([rule, line(columns), rule, *map(line, rows), rule]))
    if have_tp:
        print("razor ops = len(mutator.graph_trace.nodes); tp nodes = len(dg.module2node); "
              "razor units = len(mutator.mutable_units); tp groups = len(groups)")


def print_linearity(results: list[ModelResult]) -> None:
    ok = [r for r in results if r.razor.median and r.razor.nodes]
    if not ok:
        return
    have_tp = tp is not None
    print("\nlinearity: razor prepare time per traced op (median time / ops)")
    print(f"{'model':<14}{'ops':>6}{'razor s':>10}{'razor ms/op':>13}"
          + (f"{'tp ms/node':>12}" if have_tp else ""))
    for r in ok:
        per_op = r.razor.median / r.razor.nodes * 1e3
        t = r.tp
        tp_per = t.median / t.nodes * 1e3 if (t and t.median and t.nodes) else None
        print(f"{r.name:<14}{r.razor.nodes:>6}{r.razor.median:>10.3f}{per_op:>13.2f}"
              + (f"{fmt(tp_per, '.2f'):>12}" if have_tp else ""))
    by_name = {r.name: r for r in ok}
    small, big = by_name.get("densenet121"), by_name.get(STRESS_MODEL)
    if small and big:
        op_ratio = big.razor.nodes / small.razor.nodes
        time_ratio = big.razor.median / small.razor.median
        verdict = "about linear" if time_ratio <= 1.25 * op_ratio else "super-linear"
        print(f"{STRESS_MODEL} vs densenet121: {op_ratio:.2f}x ops, {time_ratio:.2f}x time "
              f"-> {verdict} (ms/op ratio {time_ratio / op_ratio:.2f})")


def print_raw(results: list[ModelResult]) -> None:
    print("\nraw timed repetitions, in run order (s)")
    for r in results:
        for engine, res in (("razor", r.razor), ("tp", r.tp)):
            if res is not None and res.times:
                print(f"  {r.name:<14}{engine:<6}" + " ".join(f"{t:.3f}" for t in res.times))


def print_errors(results: list[ModelResult]) -> None:
    for r in results:
        for engine, res in (("razor_widgets", r.razor), ("torch-pruning", r.tp)):
            if res is not None and res.error:
                print(f"\n{engine} failed on {r.name}:\n  {res.error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help=f"torchvision model names (comma or space separated); default: "
                             f"{' '.join(BASE_MODELS)} and {STRESS_MODEL} last")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (median)")
    parser.add_argument("--no-stress", action="store_true",
                        help=f"leave out the stress case {STRESS_MODEL}")
    parser.add_argument("--stress", action="store_true",
                        help=f"run only the stress case {STRESS_MODEL}")
    parser.add_argument("--lm", action="store_true",
                        help="run only the language-model rows (lm_rows.py: Llama-shaped, cpu and meta, "
                             "each in a fresh process, with peak RSS)")
    parser.add_argument("--lm-public", action="store_true",
                        help="run only the public LLM shapes on meta (lm_public_shapes.py: Llama-3.1-405B, "
                             "Llama-3-70B, Mixtral-8x22B, DeepSeek-V3; time, peak RSS, exact params)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: batch-1 forwards gain nothing "
                             "from more, and on a shared 2-core box 2 threads make timings "
                             "several times slower and far noisier); 0 keeps torch's default")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.lm:
        import lm_rows

        return lm_rows.main([])
    if args.lm_public:
        import lm_public_shapes

        return lm_public_shapes.main([])

    if args.models:
        models = model_names(parser, args.models)
    elif args.stress:
        models = [STRESS_MODEL]
    else:
        models = BASE_MODELS + ([] if args.no_stress else [STRESS_MODEL])
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"{versions()}, torch-pruning {TP_VERSION}")
    print(f"threads {torch.get_num_threads()}, input {'x'.join(map(str, INPUT_SHAPE))}, "
          f"repeat {args.repeat} (+1 warm-up), models: {', '.join(models)}")
    if tp is None:
        print("\nNOTE: torch_pruning is not installed; timing razor_widgets alone.\n"
              "      Install it with: python3 -m pip install torch-pruning==1.6.1  "
              '(or pip install -e ".[bench]")')

    torch.manual_seed(0)
    x = torch.randn(*INPUT_SHAPE)
    results = []
    wall = time.perf_counter()
    for name in models:
        start = time.perf_counter()
        res = bench_model(name, args.repeat, x)
        results.append(res)
        status = "".join(f" [{eng} error]" for eng, e in (("razor", res.razor), ("tp", res.tp))
                         if e is not None and e.error)
        print(f"  {name}: done in {time.perf_counter() - start:.1f}s{status}", flush=True)

    print_table(results, args.repeat)
    print_linearity(results)
    print_raw(results)
    print_errors(results)
    print(f"\ntotal wall time {time.perf_counter() - wall:.1f}s")
    return 1 if any(r.razor.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
