"""Shared fixtures. Shared helper code is in helpers.py, the browser page driver in browser_pages.py;
the test tiers (markers) are set up in the repository's conftest.py."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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

