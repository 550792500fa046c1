"""Time a sensitivity scan: serial, on 2 Dask worker processes, against its limit.

A torchvision model (``weights=None``, ``eval()``) is prepared once with L1 units.
``eval_fn`` is minus the mean squared distance of the masked model's outputs on a fixed batch
to the unpruned model's (a score that needs no labels). Measured side by side in one run:

* one ``eval_fn`` call: the median of ``--repeat`` calls on the full model;
* the limit: that median x the number of evaluations (units x ratios + 1), which any scan
  costs when it runs one evaluation at a time;
* the serial scan: ``sensitivity_scan(mutator, eval_fn, ratios)``;
* 2 Dask workers: ``sensitivity_scan(..., executor=Client(LocalCluster(n_workers=2,
  threads_per_worker=1, processes=True)).get_executor())``; the cluster's start-up is timed
  apart and not counted in the scan (a cluster serves many scans);
* 2 threads: ``ThreadPoolExecutor(2)`` (each thread on its own copy of the model).

The ratios printed are measured time over the limit (1.0 = no overhead beyond the
evaluations; with N workers on N free cores it tends to 1/N) and the Dask speed-up over the
serial scan. The results of every executor must equal the serial scan (exit status 1
otherwise). torch runs with ``--threads`` threads in this process (default 1) and one thread in
each worker, so that the comparison is of executors, not of intra-op threads.

Run:  python3 benchmarks/bench_sensitivity.py [--model resnet18] [--size 64] [--batch 8]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import statistics
import sys
import time

import torch
import torchvision

from razor_widgets import ChannelMutator, sensitivity_scan

from common import model_names, quiet, versions


class OutputDistance:
    """``eval_fn``: minus the mean squared distance to the unpruned model's outputs on ``x``."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        self.x = x
        with torch.no_grad():
            self.reference = model(x)

    def __call__(self, model: torch.nn.Module) -> float:
        with torch.no_grad():
            return -float((model(self.x) - self.reference).pow(2).mean())


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="a torchvision model name (default resnet18)")
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--batch", type=int, default=8, help="images in the evaluation batch (default 8)")
    parser.add_argument("--ratios", default="0.25,0.5,0.75", help="comma-separated ratios (default 0.25,0.5,0.75)")
    parser.add_argument("--repeat", type=int, default=5, help="eval_fn calls timed for the limit (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process (0: torch's default)")
    parser.add_argument("--no-dask", action="store_true", help="leave out the Dask cluster")
    args = parser.parse_args(argv)
    (name,) = model_names(parser, [args.model])
    ratios = [float(r) for r in args.ratios.split(",") if r]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    with quiet():
        plain = getattr(torchvision.models, name)(weights=None).eval()
        model = copy.deepcopy(plain)
        mutator = ChannelMutator(channel_unit_cfg="L1MutableChannelUnit")
        mutator.prepare_from_supernet(model, example_inputs=x[:1])
    eval_fn = OutputDistance(plain, x)
    evaluations = len(mutator.mutable_units) * len(ratios) + 1
    print(versions())
    print(f"{name}, input {args.batch}x3x{args.size}x{args.size}, {len(mutator.mutable_units)} units x "
          f"{len(ratios)} ratios + 1 = {evaluations} evaluations, torch threads {torch.get_num_threads()}")

    eval_fn(model)  # warm-up
    one = statistics.median(timed(eval_fn, model)[0] for _ in range(max(1, args.repeat)))
    limit = one * evaluations
    rows = [("limit (evaluations x one eval_fn)", limit, None)]
    serial_s, serial = timed(sensitivity_scan, mutator, eval_fn, ratios, progress=False)
    rows.append(("serial scan", serial_s, serial))
    with cf.ThreadPoolExecutor(2) as pool:
        s, out = timed(sensitivity_scan, mutator, eval_fn, ratios, executor=pool, progress=False)
    rows.append(("2 threads", s, out))
    start_s = None
    if not args.no_dask:
        from dask import distributed
        with quiet():
            start_s, cluster = timed(distributed.LocalCluster, n_workers=2, threads_per_worker=1,
                                     processes=True, dashboard_address=None)
            with cluster, distributed.Client(cluster) as client:
                executor = client.get_executor()
                sensitivity_scan(mutator, eval_fn, ratios[:1], units=[mutator.mutable_units[0].name],
                                 executor=executor, progress=False)  # warm-up: workers import torch
                s, out = timed(sensitivity_scan, mutator, eval_fn, ratios, executor=executor, progress=False)
        rows.append(("2 Dask workers", s, out))

    print(f"\none eval_fn call: {one * 1e3:.1f} ms (median of {args.repeat})")
    if start_s is not None:
        print(f"Dask LocalCluster start-up (2 processes): {start_s:.1f} s, not counted below")
    print(f"\n{'':36}{'seconds':>10}{'/ limit':>10}{'serial /':>10}  same table")
    ok = True
    for label, seconds, out in rows:
        same = "" if out is None else ("yes" if out == serial else "NO")
        ok &= same != "NO"
        print(f"{label:36}{seconds:>10.2f}{seconds / limit:>10.2f}{serial_s / seconds:>10.2f}  {same}")
    print("\n/ limit: measured time over (evaluations x one eval_fn call); serial /: the serial scan's time "
          "over this one (> 1: faster). The machine's cores are shared: with 2 workers on 2 busy cores "
          "the Dask speed-up stays well under 2.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
