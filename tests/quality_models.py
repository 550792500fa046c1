"""A small CNN trained on scikit-learn's digits (offline, fixed seed), and its eval functions:
units of a trained net differ in sensitivity, which the quality tests need."""
from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from razor_widgets import ChannelMutator


def digits_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 8x8 images scaled to [0, 1], a fixed split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return x[:1200], y[:1200], x[1200:], y[1200:]


def digits_net() -> nn.Module:
    """Two convs and two linears: three prunable units (16, 32 and 64 channels)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))


def trained_digits_net(steps: int = 150, seed: int = 0) -> nn.Module:
    """A new ``digits_net`` with the weights of ``steps`` Adam steps on the training split
    (trained once per test session), in eval mode."""
    net = digits_net()
    net.load_state_dict(_trained_weights(steps, seed))
    return net.eval()


@functools.lru_cache(maxsize=2)
def _trained_weights(steps: int, seed: int) -> dict[str, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(steps, seed).state_dict()
    finally:
        torch.set_num_threads(threads)


def _train(steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    x, y, _, _ = digits_data()
    net = digits_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net


class Accuracy:
    """``eval_fn``: accuracy on the digits test split (a picklable class: ships to workers)."""

    def __init__(self) -> None:
        _, _, self.x, self.y = digits_data()
        self.calls = 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        with torch.no_grad():
            return float((model(self.x).argmax(1) == self.y).float().mean())


class NegativeLoss(Accuracy):
    """``eval_fn``: minus the cross-entropy on the test split (a smooth score)."""

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        with torch.no_grad():
            return -float(nn.functional.cross_entropy(model(self.x), self.y))


def prepared(net: nn.Module, unit: str = "L1MutableChannelUnit") -> ChannelMutator:
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit, default_args={}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(net, example_inputs=torch.zeros(1, 1, 8, 8))
    return mutator
