"""Time the explorer's two interactive paths against one forward pass of the model.

For each torchvision model (``weights=None``, ``eval()``, input 1x3x224x224) a
``PruningExplorer`` is built once (no front end: widget messages go nowhere, as in a kernel
whose front end is closed), then, interleaved in ``--rounds`` rounds so that machine noise
hits them alike:

* slider -> counters: ``explorer.sliders[unit].value = v``, alternating between two ratios, until
  it returns: the kernel-side work of one slider event (the unit's choice, the live count,
  the counters' text and the kept label; the graph redraw is only scheduled, debounced);
  median of ``--repeat`` events (500). The unit is the one whose change touches the most
  counted layers (the worst case for the counter). After every event the counters' text must
  equal ``format_counts(mutator.resources())``: the exit status is 1 otherwise;
* graph recolour: ``explorer.graph_view.recolour()`` after a slider move: the kept fractions
  of every node, the markers painted over the cached background and the PNG encoded (the
  layout is computed once, when the explorer is built); median of ``--recolour-repeat`` (30);
* forward: one ``model(x)`` under ``torch.no_grad()`` of the plain, unprepared model; median
  of ``--forward-repeat`` (5).

Targets: slider -> counters under 5 ms, graph recolour under 100 ms.

Run:  python3 benchmarks/bench_explorer.py [--models resnet50 vit_b_16] [--repeat 500]
"""
from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
import torchvision

from razor_widgets import PruningExplorer
from razor_widgets.widgets.counters import format_counts

from bench_counters import busiest_unit
from common import model_names, quiet, versions

DEFAULT_MODELS = ["resnet50", "vit_b_16"]
INPUT_SHAPE = (1, 3, 224, 224)
RATIOS = (0.5, 0.75)
SLIDER_TARGET_MS, RECOLOUR_TARGET_MS = 5.0, 100.0


@dataclass
class Result:
    name: str
    units: int = 0
    nodes: int = 0
    unit: str = ""
    build_s: float = 0.0
    slider: list[float] = field(default_factory=list)
    recolour: list[float] = field(default_factory=list)
    forward: list[float] = field(default_factory=list)
    mismatches: int = 0
    error: str | None = None


def median_ms(times: list[float]) -> float | None:
    return statistics.median(times) * 1e3 if times else None


def p90_ms(times: list[float]) -> float | None:
    return sorted(times)[min(len(times) - 1, int(0.9 * len(times)))] * 1e3 if times else None


def bench_model(name: str, x: torch.Tensor, repeat: int, recolour_repeat: int, forward_repeat: int,
                rounds: int) -> Result:
    res = Result(name)
    with quiet():
        plain = getattr(torchvision.models, name)(weights=None).eval()
        start = time.perf_counter()
        explorer = PruningExplorer(copy.deepcopy(plain), x, redraw_delay=3600.0)  # redraws wait: timed apart
        res.build_s = time.perf_counter() - start
    mutator = explorer.mutator
    res.units, res.nodes = len(explorer.sliders), mutator.graph.number_of_nodes()
    res.unit = busiest_unit(mutator)[0]
    slider = explorer.sliders[res.unit]
    moves = [0]

    def slider_events(n: int, record: bool = True) -> None:
        gc.collect()
        gc.disable()
        try:
            for _ in range(n):
                moves[0] += 1
                value = RATIOS[moves[0] % 2]
                t0 = time.perf_counter()
                slider.value = value
                t1 = time.perf_counter()
                if record:
                    res.slider.append(t1 - t0)
                    res.mismatches += explorer.counters.text != format_counts(mutator.resources())
        finally:
            gc.enable()
        explorer.graph_view.redraw.cancel()

    def recolours(n: int) -> None:
        for _ in range(n):
            moves[0] += 1
            slider.value = RATIOS[moves[0] % 2]  # something to recolour, untimed
            t0 = time.perf_counter()
            explorer.graph_view.recolour()
            res.recolour.append(time.perf_counter() - t0)

    def forwards(n: int) -> None:
        with torch.no_grad():
            for _ in range(n):
                t0 = time.perf_counter()
                plain(x)
                res.forward.append(time.perf_counter() - t0)

    slider_events(20, record=False)  # warm-up
    recolours(2)
    res.recolour.clear()
    forwards(1)
    res.forward.clear()
    for r in range(rounds):
        slider_events(repeat // rounds + (r < repeat % rounds))
        recolours(recolour_repeat // rounds + (r < recolour_repeat % rounds))
        forwards(forward_repeat // rounds + (r < forward_repeat % rounds))
    return res


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result]) -> None:
    columns = ["model", "units", "graph nodes", "slider->counters ms", "p90 ms", "graph recolour ms",
               "forward ms", "forward/slider", "forward/recolour"]
    rows = []
    for r in results:
        sl, rc, fw = median_ms(r.slider), median_ms(r.recolour), median_ms(r.forward)
        rows.append([r.name, str(r.units), str(r.nodes), fmt(sl, ".3f"), fmt(p90_ms(r.slider), ".3f"),
                     fmt(rc, ".1f"), fmt(fw, ".1f"), fmt(fw / sl if fw and sl else None, ",.0f"),
                     fmt(fw / rc if fw and rc else None, ",.1f")])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    print("\n".join([rule, line(columns), rule, *map(line, rows), rule]))
    print("slider->counters = explorer.sliders[unit].value = v, until it returns (choice, live count, counters' "
          "text, kept label; graph redraw scheduled); graph recolour = explorer.graph_view.recolour(); "
          "forward = plain model(x) under no_grad")
    for r in results:
        if r.slider and r.recolour:
            sl, rc = median_ms(r.slider), median_ms(r.recolour)
            print(f"  {r.name}: slider unit {r.unit!r}; explorer built in {r.build_s:.1f}s; targets: "
                  f"slider->counters < {SLIDER_TARGET_MS:g} ms {'met' if sl < SLIDER_TARGET_MS else 'NOT met'}, "
                  f"recolour < {RECOLOUR_TARGET_MS:g} ms {'met' if rc < RECOLOUR_TARGET_MS else 'NOT met'}; "
                  f"counters' text checked after {len(r.slider)} events: {r.mismatches} mismatches")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME", default=DEFAULT_MODELS,
                        help=f"torchvision model names; default: {' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--repeat", type=int, default=500, help="timed slider events per model (median)")
    parser.add_argument("--recolour-repeat", type=int, default=30, help="timed graph recolours per model")
    parser.add_argument("--forward-repeat", type=int, default=5, help="timed forwards per model")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the three measurements")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1; 0 keeps torch's)")
    args = parser.parse_args(argv)
    if min(args.repeat, args.recolour_repeat, args.forward_repeat, args.rounds) < 1:
        parser.error("--repeat, --recolour-repeat, --forward-repeat and --rounds must be at least 1")
    models = model_names(parser, args.models)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(versions())
    print(f"threads {torch.get_num_threads()}, input {'x'.join(map(str, INPUT_SHAPE))}, slider ratios "
          f"{RATIOS[0]} <-> {RATIOS[1]}, models: {', '.join(models)}")
    torch.manual_seed(0)
    x = torch.randn(*INPUT_SHAPE)
    results = []
    for name in models:
        start = time.perf_counter()
        try:
            res = bench_model(name, x, args.repeat, args.recolour_repeat, args.forward_repeat, args.rounds)
        except Exception as exc:  # report and carry on with the other models
            res = Result(name, error=f"{type(exc).__name__}: {exc}")
        results.append(res)
        print(f"  {name}: done in {time.perf_counter() - start:.1f}s" + (f" [error: {res.error}]" if res.error else ""),
              flush=True)
    print()
    print_table(results)
    return 0 if not any(r.error or r.mismatches for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
