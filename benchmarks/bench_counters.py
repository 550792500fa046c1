"""Time the live resource counter of a prepared mutator against a FlopCounterMode forward.

For each torchvision model (``weights=None``, ``eval()``, input 1x3x224x224) a
``ChannelMutator()`` is prepared once, then three ways of getting params/MACs/FLOPs are timed
side by side in the same run:

* one-unit update: ``mutator.set_choices({unit: ratio})`` for ONE unit, alternating between two
  ratios so that something changes every time, followed by ``mutator.resources()`` (the live
  counter re-evaluates only the layers of that unit); median of ``--repeat`` runs (2000);
* full recount:    ``resource_counter(mutator).resources(recount=True)`` (every unit re-read,
  every term recomputed); median of ``--repeat // 10`` runs (200);
* FlopCounterMode: ``razor_widgets.reference_flops(model, x)``, one forward pass under
  ``torch.utils.flop_counter.FlopCounterMode`` of the plain, unprepared model (the cheapest
  forward any forward-based counter needs); median of ``--forward-repeat`` runs (3).

The slider moved is the unit whose change touches the most counted layers (found once with
what-ifs, untimed): the worst case for an incremental update. The three measurements are
interleaved in ``--forward-repeat`` rounds so that machine noise hits them alike. Each timed
call is measured on its own with ``time.perf_counter``, with the garbage collector off (as
``timeit`` does).

Target: on ResNet-50, one-unit update >= 10,000x faster than the FlopCounterMode forward
(a slider must answer in well under a millisecond; the forward takes 100-200 ms).

Correctness is checked too: at the final choices, and at one seeded random choice set, the
analytic counts must equal ``count_resources(mutator.to_static(), x)`` (params and FLOPs);
the exit status is 1 otherwise.

``--unit-type`` chooses the channel unit type (default ``SequentialMutableChannelUnit``; several,
comma-separated, are measured one after the other): importance units (``L1``, ``L2``, ``BNScale``,
``Taylor``, ``Activation``, ``Random``) rank their channels once and cache the ranking, so a move
should cost what a sequential unit's does. Taylor and activation units are calibrated first on
the benchmark's input (untimed).

Run:  python3 benchmarks/bench_counters.py [--models resnet50 vit_b_16] [--repeat 2000]
          [--unit-type SequentialMutableChannelUnit,L1MutableChannelUnit,TaylorMutableChannelUnit]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision

from razor_widgets import MODELS, ChannelMutator, calibrate, count_resources, reference_flops
from razor_widgets.counting.live_counter import resource_counter

from common import model_names, quiet, versions

DEFAULT_MODELS = ["resnet50", "mobilenet_v2", "vit_b_16"]
INPUT_SHAPE = (1, 3, 224, 224)
RATIOS = (0.5, 0.75)  # the slider alternates between these two values
TARGET = 10_000  # one-unit update vs FlopCounterMode forward, on resnet50


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """``n`` timings of ``fn()`` in seconds, each measured on its own."""
    times = []
    with no_gc():
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


@dataclass
class Check:
    label: str
    live_params: int
    live_flops: int
    ref_params: int
    ref_flops: int

    @property
    def ok(self) -> bool:
        return (self.live_params, self.live_flops) == (self.ref_params, self.ref_flops)


@dataclass
class Result:
    name: str
    unit_type: str = "SequentialMutableChannelUnit"
    units: int = 0
    unit: str = ""
    layers_touched: int = 0
    layers: int = 0
    update: list[float] = field(default_factory=list)
    update_set: list[float] = field(default_factory=list)  # of which set_choices
    update_count: list[float] = field(default_factory=list)  # of which mutator.resources()
    recount: list[float] = field(default_factory=list)
    forward: list[float] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    @staticmethod
    def _median(times: list[float]) -> float | None:
        return statistics.median(times) if times else None

    @property
    def update_s(self) -> float | None:
        return self._median(self.update)

    @property
    def update_set_s(self) -> float | None:
        return self._median(self.update_set)

    @property
    def update_count_s(self) -> float | None:
        return self._median(self.update_count)

    @property
    def recount_s(self) -> float | None:
        return self._median(self.recount)

    @property
    def forward_s(self) -> float | None:
        return self._median(self.forward)


def busiest_unit(mutator: ChannelMutator) -> tuple[str, int, int]:
    """The unit whose change alters the most layers' counts (what-ifs: choices unchanged)."""
    base = mutator.resources(by_layer=True)
    best, touched = "", -1
    for unit in mutator.mutable_units:
        what_if = mutator.resources(choices={unit.name: unit.min_choice}, by_layer=True)
        n = sum(1 for k, r in what_if.items() if (r.params, r.macs) != (base[k].params, base[k].macs))
        if n > touched:
            best, touched = unit.name, n
    return best, touched, len(base)


def check(label: str, mutator: ChannelMutator, x: torch.Tensor) -> Check:
    live = mutator.resources()
    ref = count_resources(mutator.to_static().eval(), x)
    return Check(label, live.params, live.flops, ref.params, ref.flops)


def bench_model(name: str, x: torch.Tensor, repeat: int, forward_repeat: int,
                unit_type: str = "SequentialMutableChannelUnit") -> Result:
    res = Result(name, unit_type)
    with quiet():
        plain = getattr(torchvision.models, name)(weights=None).eval()
        model = copy.deepcopy(plain)
        mutator = ChannelMutator(channel_unit_cfg=unit_type)
        mutator.prepare_from_supernet(model, example_inputs=x)
        calibrate(mutator, x)  # Taylor and activation units score on the input (untimed); others: nothing
    counter = resource_counter(mutator)
    res.units = len(mutator.mutable_units)
    res.unit, res.layers_touched, res.layers = busiest_unit(mutator)

    moves = [0]

    def one_unit_updates(n: int, record: bool = True) -> None:
        """``n`` slider moves, each timed as a whole and in its two parts."""
        with no_gc():
            for _ in range(n):
                moves[0] += 1
                choice = {res.unit: RATIOS[moves[0] % 2]}
                t0 = time.perf_counter()
                mutator.set_choices(choice)
                t1 = time.perf_counter()
                mutator.resources()
                t2 = time.perf_counter()
                if record:
                    res.update_set.append(t1 - t0)
                    res.update_count.append(t2 - t1)
                    res.update.append(t2 - t0)

    def full_recount() -> None:
        counter.resources(recount=True)

    def forward() -> None:
        reference_flops(plain, x)

    with torch.no_grad():  # as a notebook would call it; reference_flops re-enables autograd
        one_unit_updates(20, record=False)  # warm-up, untimed
        time_calls(full_recount, 20)
        forward()
        rounds = max(1, forward_repeat)
        for r in range(rounds):
            n_update = repeat // rounds + (r < repeat % rounds)
            n_recount = max(1, repeat // 10) // rounds + (r < max(1, repeat // 10) % rounds)
            one_unit_updates(n_update)
            res.recount += time_calls(full_recount, n_recount)
            res.forward += time_calls(forward, 1)

        res.checks.append(check(f"final ({res.unit} = {mutator.current_choices[res.unit]:.2f})", mutator, x))
        random.seed(0)
        mutator.set_choices(mutator.sample_choices())
        res.checks.append(check("random choices (seed 0)", mutator, x))
    return res


def fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result], repeat: int, forward_repeat: int) -> None:
    columns = ["model", "unit type", "units", "one-unit update µs", "full recount µs", "FlopCounterMode ms",
               "forward/one-unit", "forward/full recount"]
    rows = []
    for r in results:
        up, rc, fw = r.update_s, r.recount_s, r.forward_s
        rows.append([r.name, r.unit_type.replace("MutableChannelUnit", ""), fmt(r.units),
                     fmt(up and up * 1e6, ".1f"), fmt(rc and rc * 1e6, ".1f"),
                     fmt(fw and fw * 1e3, ".1f"), fmt(fw / up if fw and up else None, ",.0f"),
                     fmt(fw / rc if fw and rc else None, ",.0f")])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    print(f"\nmedians: one-unit update of {repeat} runs, full recount of {max(1, repeat // 10)}, "
          f"FlopCounterMode forward of {forward_repeat}")
    print("\n".join([rule, line(columns), rule, *map(line, rows), rule]))
    print("one-unit update = set_choices({unit: ratio}) + mutator.resources(); "
          "full recount = resource_counter(mutator).resources(recount=True); "
          "FlopCounterMode = reference_flops(plain model, x)")
    print("\none-unit update, in parts (medians, µs): set_choices({unit: ratio}), then mutator.resources()")
    for r in results:
        if r.update:
            st, ct, fw = r.update_set_s, r.update_count_s, r.forward_s
            print(f"  {r.name:<13} {r.unit_type.replace('MutableChannelUnit', ''):<11} set_choices {st * 1e6:>8.1f}   "
                  f"resources() {ct * 1e6:>8.1f}   "
                  f"forward/resources() {fw / ct:>10,.0f}")
    for r in results:
        if r.unit:
            print(f"  {r.name}: slider unit {r.unit!r} touches {r.layers_touched} of {r.layers} counted layers")
    for r in results:
        if r.name == "resnet50" and r.update_s and r.forward_s:
            ratio = r.forward_s / r.update_s
            verdict = "met" if ratio >= TARGET else "NOT met"
            print(f"target (resnet50, {r.unit_type}: one-unit update >= {TARGET:,}x faster than the forward): "
                  f"{ratio:,.0f}x -> {verdict}")


def print_checks(results: list[Result]) -> bool:
    print("\nanalytic counts vs count_resources(mutator.to_static(), x)")
    ok = True
    width = max([len(c.label) for r in results for c in r.checks] + [1])
    for r in results:
        for c in r.checks:
            ok &= c.ok
            status = "OK" if c.ok else "MISMATCH"
            print(f"  {r.name:<13} {c.label:<{width}}  params {c.live_params:>12,} vs {c.ref_params:>12,}  "
                  f"FLOPs {c.live_flops:>16,} vs {c.ref_flops:>16,}  {status}")
    return ok


def print_spread(results: list[Result]) -> None:
    print("\nspread (µs for updates and recounts, ms for forwards): min / median / p90 / max")
    for r in results:
        for label, times, scale in (("one-unit", r.update, 1e6), ("recount", r.recount, 1e6),
                                    ("forward", r.forward, 1e3)):
            if times:
                s = sorted(times)
                p90 = s[min(len(s) - 1, int(0.9 * len(s)))]
                print(f"  {r.name:<13}{label:<10}{s[0] * scale:>10.1f}{statistics.median(s) * scale:>10.1f}"
                      f"{p90 * scale:>10.1f}{s[-1] * scale:>10.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME", default=DEFAULT_MODELS,
                        help=f"torchvision model names (comma or space separated); default: "
                             f"{' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--repeat", type=int, default=2000,
                        help="timed one-unit updates per model (median); full recounts: a tenth of it")
    parser.add_argument("--forward-repeat", type=int, default=3,
                        help="timed FlopCounterMode forwards per model (median), also the number of "
                             "interleaved rounds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for the forwards (default 1, as bench_prepare.py: on "
                             "a shared 2-core box a second thread makes timings far noisier); 0 keeps "
                             "torch's default")
    parser.add_argument("--unit-type", default="SequentialMutableChannelUnit", metavar="TYPE[,TYPE...]",
                        help="channel unit type(s) from the registry, comma-separated (default "
                             "SequentialMutableChannelUnit), e.g. L1MutableChannelUnit,TaylorMutableChannelUnit")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.forward_repeat < 1:
        parser.error("--repeat and --forward-repeat must be at least 1")
    unit_types = [t for t in args.unit_type.split(",") if t]
    unknown = [t for t in unit_types if t not in MODELS]
    if unknown or not unit_types:
        parser.error(f"unknown unit type(s): {', '.join(unknown) or '(none given)'}")
    models = model_names(parser, args.models)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(versions())
    print(f"threads {torch.get_num_threads()}, input {'x'.join(map(str, INPUT_SHAPE))}, "
          f"slider ratios {RATIOS[0]} <-> {RATIOS[1]}, models: {', '.join(models)}")

    torch.manual_seed(0)
    x = torch.randn(*INPUT_SHAPE)
    results = []
    wall = time.perf_counter()
    for unit_type in unit_types:
        for name in models:
            start = time.perf_counter()
            try:
                res = bench_model(name, x, args.repeat, args.forward_repeat, unit_type)
            except Exception as exc:  # report and carry on with the other models
                res = Result(name, unit_type, error=f"{type(exc).__name__}: {exc}")
            results.append(res)
            print(f"  {name} [{unit_type}]: done in {time.perf_counter() - start:.1f}s"
                  + (f" [error: {res.error}]" if res.error else ""), flush=True)

    print_table(results, args.repeat, args.forward_repeat)
    ok = print_checks(results)
    print_spread(results)
    print(f"\ntotal wall time {time.perf_counter() - wall:.1f}s")
    return 0 if ok and not any(r.error for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
