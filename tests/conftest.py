"""Shared fixtures and helpers: models with non-degenerate weights and statistics."""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator


def make_nontrivial(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norms random statistics and affine parameters and re-draw all-zero parameters,
    so that outputs depend on every channel (torchvision zero-inits some heads and gammas)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            for name, p in module.named_parameters(recurse=False):
                if name in ("weight",) and isinstance(module, (nn.modules.batchnorm._BatchNorm,
                                                               nn.LayerNorm, nn.GroupNorm)):
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                elif not bool(p.any()) or (name == "bias" and p.dim() == 1):
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def prepare(model: nn.Module, x: torch.Tensor, unit: str = "SequentialMutableChannelUnit",
            **unit_args) -> tuple[ChannelMutator, nn.Module]:
    """Prepare ``model`` (in place) and return the mutator and an unprepared copy."""
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit, default_args=unit_args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator, original


@pytest.fixture
def image() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny layers: on a busy 2-core machine a second thread
    only adds overhead (up to ten times the run time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's chromium driven by playwright, for the real-browser tests (helpers: browser_pages.py).
    Skips when chromium or playwright is missing; with CI set that fails the test instead."""
    from browser_pages import launched_chromium

    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def explorer(one_thread):
    """A ResNet-18 explorer (64 px input, no redraw delay), one per test module."""
    import torchvision

    from razor_widgets import PruningExplorer

    return PruningExplorer(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64), redraw_delay=0)


@pytest.fixture
def ex(explorer):
    """The module's ResNet-18 explorer at full choices, with a fresh history, its buttons in step
    with it and no unit selected."""
    from razor_widgets.widgets.history import ChoiceHistory

    explorer.reset()
    explorer.history = ChoiceHistory(explorer.mutator.current_choices)
    explorer._update_buttons()
    explorer.select_unit(None)
    return explorer
