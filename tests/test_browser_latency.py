"""The Latency counter in a real browser (Debian's chromium driven by playwright, on a Voilà page):
"Profile latency" shows its progress, then the counter shows milliseconds and follows a slider.

The recipe is docs/browser-testing.md of the shared docs; helpers come from browser_pages.py.
Locally the tests skip when chromium or playwright is missing; with CI set, that fails them.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from browser_pages import UNIT_SLIDER, click, press, voila_server, wait_for, write_notebook

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

CELL = ("import torch\nfrom torch import nn\nfrom razor_widgets import PruningExplorer\n"
        "torch.set_num_threads(1)\n"
        "net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 128, 3),\n"
        "                    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))\n"
        "explorer = PruningExplorer(net.eval(), torch.randn(1, 3, 48, 48))\n"
        "explorer.latency.profile_kwargs.update(align=8, cache_dir={cache!r})\n"
        "explorer.latency.threads.value = 1\n"
        "explorer")
PROGRESS = re.compile(r"(\d+) / (\d+) timings")
SHOWN = re.compile(r"Latency ([\d.]+) ms of ([\d.]+) ms \(([\d.]+) %\)")


@contextmanager
def this_checkout_imported() -> Iterator[None]:
    """While a server starts: its kernels import this checkout's razor_widgets (not another copy)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), before) if p)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory) -> Iterator:
    base = tmp_path_factory.mktemp("voila_latency")
    notebook = write_notebook(base / "latency.ipynb", CELL.format(cache=str(base / "cache")))
    with ExitStack() as stack:
        with this_checkout_imported():
            url = stack.enter_context(voila_server(base, notebook))
        page = browser.new_page(viewport={"width": 1700, "height": 1300})
        stack.callback(page.close)
        page.goto(url, timeout=120_000)
        page.locator("button:has-text('Profile latency')").wait_for(timeout=180_000)
        yield page


def latency_text(page) -> str:
    return page.locator(".widget-html:has-text('Latency'):visible").first.inner_text()


def shown(page) -> tuple[float, float, float] | None:
    match = SHOWN.search(latency_text(page))
    return (float(match[1]), float(match[2]), float(match[3])) if match else None


def test_profile_progress_then_the_counter_follows_a_slider(page) -> None:
    assert "not measured" in latency_text(page)
    click(page, "Profile latency")
    seen = set()

    def finished() -> bool:
        body = page.inner_text("body")
        seen.update((int(a), int(b)) for a, b in PROGRESS.findall(body))
        return "timings in" in body
    wait_for(page, finished, "the profile's end", timeout=300)
    assert any(0 < done < total for done, total in seen), seen  # the progress was shown on the way
    full = wait_for(page, lambda: shown(page), "milliseconds in the Latency counter")
    assert full[2] == 100.0 and full[0] == full[1] > 0
    handle = page.locator(f"{UNIT_SLIDER} .noUi-handle").last
    press(page, handle, "Home")  # the smallest count: fewer channels than any cliff can make up for
    smaller = wait_for(page, lambda: (s := shown(page)) and s[2] < 100.0 and s, "a smaller latency after the slider")
    assert smaller[0] < full[0] and smaller[1] == full[1]
    click(page, "Reset to full")
    wait_for(page, lambda: (s := shown(page)) and s[2] == 100.0, "the full latency again")
