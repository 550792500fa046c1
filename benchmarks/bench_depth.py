"""Depth against width at one budget (issue 28), on scikit-learn's digits.

A small residual CNN (a stem, ``--blocks`` identity-shortcut residual blocks of 32 channels at
8x8, pooling and a linear head) is trained from a fixed seed (``train_digits_cnn``). Each row
cuts it to ``--keep`` of its MACs in one way and reports, for the exported model: params, MACs
(of the 2-image batch it was traced on),
test accuracy before and after a short recovery fine-tune (``finetune``, ``--steps`` batches),
and the CPU time of one forward of the 450 test images (median of ``--repeat``):

* width, uniform: every channel unit alike (``fit_budget(mode="uniform")``);
* width, sensitivity: the sensitivity budget over the channel units only;
* depth: blocks dropped, least important first (``block_importance``: 1 - cosine of the stream
  before and after, on training images), until the budget is met; widths full;
* depth + width, uniform: ``fit_budget(mode="uniform", block_scores=...)``;
* depth + width, sensitivity: one scan over channel units and blocks, one greedy budget.

Latency, predicted against measured (issue 28, item 5): a latency table of the model traced on
one image (``profile_latency``, batch ``--batch``, 1 thread, CPU clock), the prediction
``mutator.latency(choices=...)`` of each row (a dropped block's layers and ops leave the sum), and
``measure_latency`` of the row's export at the same setting: error = (predicted - measured) /
measured, with the measurement's noise. Run it pinned to one core (``taskset -c 0``).

Run:  python3 benchmarks/bench_depth.py [--blocks 6] [--keep 0.5] [--steps 150] [--batch 64]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import (
    ChannelMutator,
    block_importance,
    count_resources,
    finetune,
    fit_budget,
    measure_latency,
    profile_latency,
    sensitivity_scan,
)
from razor_widgets.models.digits import digits_accuracy, digits_data, digits_loader, train_digits_cnn

from common import quiet, versions


class Block(nn.Module):
    """conv-bn-relu-conv-bn plus the identity, then relu."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResidualDigits(nn.Module):
    """A stem to 32 channels, residual blocks at 8x8, global pooling and a linear head."""

    def __init__(self, blocks: int = 6, c: int = 32) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(*[Block(c) for _ in range(blocks)])
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def prepared(model: nn.Module, images: int = 2) -> ChannelMutator:
    mutator = ChannelMutator()
    with quiet():
        mutator.prepare_from_supernet(copy.deepcopy(model), digits_data().test_images[:images])
    return mutator


def latency_rows(model: nn.Module, plans: list, batch: int) -> list:
    """Per plan: (predicted ms, measured ms, noise of the measurement) at ``batch``, 1 thread."""
    mutator = prepared(model, images=1)  # traced on one image: the table times ops too
    with tempfile.TemporaryDirectory() as cache:
        table = profile_latency(mutator, batch_size=batch, threads=1, clock="cpu", cache_dir=cache)
    print(f"latency table: {len(table.layers)} entries in {table.seconds:.1f} s, noise {table.noise:.1%}")
    out = []
    for _, choices in plans:
        predicted = mutator.latency(choices=choices).ms
        mutator.set_choices({**mutator.max_choices, **choices})
        with quiet():
            static = mutator.to_static(check=False)
        timing = min((measure_latency(static, mutator.example_inputs, batch_size=batch, threads=1, clock="cpu",
                                      repeats=25) for _ in range(3)), key=lambda t: t.median_ms)
        out.append((predicted, timing.median_ms, timing.noise))
    mutator.set_choices(mutator.max_choices)
    return out


def depth_only(mutator: ChannelMutator, keep: float, scores: dict[str, float]) -> dict:
    choices = {}
    for name in sorted(scores, key=scores.get):
        if mutator.resources(choices).macs <= keep * mutator.resources().original_macs:
            break
        choices[name] = "drop"
    return choices


def row(label: str, model: nn.Module, choices: dict, args: argparse.Namespace) -> list:
    mutator = prepared(model)
    mutator.set_choices(choices)
    with quiet():
        static = mutator.to_static()
    x = digits_data().test_images
    res = count_resources(static, x[:2])  # the traced batch: the budget's MACs
    before = digits_accuracy(static)
    with quiet():
        finetune(static, digits_loader(seed=1), steps=args.steps, lr=1e-3, progress=False)
    after = digits_accuracy(static)
    static.eval()
    times = []
    with torch.no_grad():
        for _ in range(args.repeat):
            start = time.perf_counter()
            static(x)
            times.append(time.perf_counter() - start)
    dropped = sum(1 for c in choices.values() if c == "drop")
    return [label, dropped, res.params, res.macs, before, after, statistics.median(times) * 1e3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="batch of the latency rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = train_digits_cnn(model=ResidualDigits(args.blocks))
    print(versions())
    base = prepared(model)
    print(f"ResidualDigits: {args.blocks} blocks, {len(base.removable_blocks)} removable, "
          f"{len(base.mutable_units)} channel units; accuracy {digits_accuracy(model):.4f}; "
          f"budget: {args.keep:.0%} of {base.resources().original_macs:,} MACs; fine-tune {args.steps} steps")
    calibration = [images for images, _ in list(digits_loader(seed=2))[:4]]
    scores = block_importance(base, calibration)
    print("block importance (1 - cos):", ", ".join(f"{n.split(':')[1]} {s:.3f}" for n, s in scores.items()))
    channel_scan = sensitivity_scan(base, digits_accuracy, units=[u.name for u in base.mutable_units], progress=False)
    full_scan = sensitivity_scan(base, digits_accuracy, progress=False)
    plans = [
        ("full model (no cut)", {}),
        ("width, uniform", fit_budget(base, args.keep, "macs", "uniform").choices),
        ("width, sensitivity", fit_budget(base, args.keep, "macs", "sensitivity", sensitivity=channel_scan).choices),
        ("depth (block importance)", depth_only(base, args.keep, scores)),
        ("depth + width, uniform", fit_budget(base, args.keep, "macs", "uniform", block_scores=scores).choices),
        ("depth + width, sensitivity", fit_budget(base, args.keep, "macs", "sensitivity",
                                                  sensitivity=full_scan).choices),
    ]
    rows = [row(label, model, choices, args) for label, choices in plans]
    print(f"\n{'':28}{'dropped':>8}{'params':>10}{'MACs':>12}{'acc':>8}{'acc ft':>8}{'ms/450':>8}")
    for label, dropped, params, macs, before, after, ms in rows:
        print(f"{label:28}{dropped:>8}{params:>10,}{macs:>12,}{before:>8.4f}{after:>8.4f}{ms:>8.2f}")
    print("\nacc: test accuracy of the export; acc ft: after the recovery fine-tune; ms/450: one forward "
          "of the 450 test images, 1 thread, median")
    print(f"\nlatency at batch {args.batch}, 1 thread, CPU clock (best of 3 medians of 25):")
    print(f"{'':28}{'dropped':>8}{'predicted':>11}{'measured':>10}{'error':>8}{'noise':>8}")
    for (label, dropped, *_), (predicted, measured, noise) in zip(rows, latency_rows(model, plans, args.batch)):
        error = 100 * (predicted - measured) / measured
        print(f"{label:28}{dropped:>8}{predicted:>9.3f}ms{measured:>8.3f}ms{error:>+7.1f}%{100 * noise:>7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
