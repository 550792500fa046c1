"""Peak memory of preparing and exporting a model, against the model's own size.

Every measurement runs in a fresh child process (peak RSS only grows, so each needs its own),
one after the other in the same run:

* ``model``:   build the model (``weights=None``, ``eval()``); its parameter and buffer bytes;
* ``forward``: one plain forward on a 1x3x224x224 input under ``torch.no_grad()``: the
  activations any tool that runs the model pays for;
* ``prepare``: ``ChannelMutator(L1 units).prepare_from_supernet(model, x)`` (one traced
  forward plus the channel analysis);
* ``export``:  prepare, every unit at 0.5, then ``to_static()`` (a smaller copy of the weights is
  what an export is; the prepared model's weights are not copied first).

Each child reports the rise of its peak RSS (``ru_maxrss``) over the RSS it had just before the
step, and for ``prepare`` also what stays after it (RSS after ``gc.collect()`` minus before):
masks and bookkeeping, never a second copy of the weights.

Run:  python3 benchmarks/bench_memory.py [--models resnet50 vit_b_16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import model_names, versions

CHILD = r"""
import gc, json, resource, sys, warnings
import torch, torchvision
warnings.simplefilter("ignore")
torch.set_num_threads(1)

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

name, step = sys.argv[1], sys.argv[2]
model = torchvision.models.get_model(name, weights=None).eval()
x = torch.randn(1, 3, 224, 224)
size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
from razor_widgets import ChannelMutator
mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
if step == "export":
    mutator.prepare_from_supernet(model, example_inputs=x)
    mutator.set_choices({u: 0.5 for u in mutator.current_choices})
gc.collect()
before, result = rss_mb(), {"model_mb": size}
if step == "forward":
    with torch.no_grad():
        model(x)
elif step == "prepare":
    mutator.prepare_from_supernet(model, example_inputs=x)
elif step == "export":
    small = mutator.to_static()
    result["exported_mb"] = sum(p.numel() * p.element_size() for p in small.parameters()) / 2**20
result["peak_rise_mb"] = max(0.0, peak_mb() - before)
gc.collect()
result["kept_mb"] = rss_mb() - before
print(json.dumps(result))
"""


def measure(name: str, step: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, name, step], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    args = parser.parse_args()
    models = model_names(parser, args.models)
    print(versions())
    header = ("model", "model MB", "forward peak MB", "prepare peak MB", "prepare kept MB",
              "prepare peak / model", "export peak MB", "export kept MB", "exported MB")
    rows = []
    for name in models:
        forward, prepare, export = (measure(name, step) for step in ("forward", "prepare", "export"))
        rows.append((name, f"{prepare['model_mb']:.1f}", f"{forward['peak_rise_mb']:.1f}",
                     f"{prepare['peak_rise_mb']:.1f}", f"{prepare['kept_mb']:.1f}",
                     f"{prepare['peak_rise_mb'] / prepare['model_mb']:.2f}",
                     f"{export['peak_rise_mb']:.1f}", f"{export['kept_mb']:.1f}", f"{export['exported_mb']:.1f}"))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
    print("peak = rise of the child's peak RSS over its RSS just before the step (0 when the step fits under "
          "an earlier peak); kept = RSS that stays after the step and a gc.collect(), which includes memory the "
          "allocator keeps after freeing the traced forward's activations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
