"""What ``to_static()``'s own check costs, against one forward of the model.

For each torchvision model (``weights=None``, ``eval()``, one 1x3x224x224 input), prepared once
with L1 units and every unit at 0.5, the same run times, interleaved per repetition:

* forward:        ``model(x)`` of the masked supernet under ``torch.no_grad()``;
* export:         ``mutator.to_static(check=False)``;
* export+check:   ``mutator.to_static()`` (the masked model and the export run on the example
  input and their outputs are compared).

The median of ``--repeat`` runs of each is printed, with export+check minus export and the
ratios to one forward: the check costs two forwards (the masked model and the smaller export)
plus the comparison.

Run:  python3 benchmarks/bench_export_check.py [--models resnet50,vit_b_16] [--repeat 5]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision

from razor_widgets import ChannelMutator

from common import model_names, quiet, versions

MODELS = ["resnet50", "vit_b_16"]
INPUT_SHAPE = (1, 3, 224, 224)


def timed(action: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(name: str, repeat: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with quiet():
        mutator.prepare_from_supernet(model, example_inputs=x)
    mutator.set_choices({unit.name: 0.5 for unit in mutator.mutable_units})

    def forward() -> None:
        with torch.no_grad():
            model(x)

    actions = {"forward": forward, "export": lambda: mutator.to_static(check=False),
               "export+check": mutator.to_static}
    for action in actions.values():  # warm-up, untimed
        action()
    times: dict[str, list[float]] = {key: [] for key in actions}
    for k in range(repeat):
        order = list(actions) if k % 2 == 0 else list(reversed(actions))
        for key in order:
            times[key].append(timed(actions[key]))
    return {key: statistics.median(values) for key, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, metavar="NAME",
                        help="torchvision model names, comma or space separated (default resnet50 vit_b_16)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each (default 5; the median is shown)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1; 0 keeps torch's)")
    args = parser.parse_args(argv)
    names = model_names(parser, args.models)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(versions())
    print(f"threads {torch.get_num_threads()}, input {'x'.join(map(str, INPUT_SHAPE))}, every unit at 0.5, "
          f"median of {args.repeat}\n")
    header = f"{'model':<12} {'forward s':>10} {'export s':>9} {'export+check s':>15} {'check s':>8} " \
             f"{'check / forward':>16} {'export+check / forward':>23}"
    print(header)
    print("-" * len(header))
    for name in names:
        t = measure(name, args.repeat)
        check = t["export+check"] - t["export"]
        print(f"{name:<12} {t['forward']:>10.3f} {t['export']:>9.3f} {t['export+check']:>15.3f} {check:>8.3f} "
              f"{check / t['forward']:>16.2f} {t['export+check'] / t['forward']:>23.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
