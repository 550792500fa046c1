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

from browser_pages import UNIT_SLIDER, click, press, voila_server, wait_for, wait_text, write_notebook

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


def result_text(page) -> str:
    return page.locator(".widget-label:has-text('(asked '):visible").first.inner_text()


def test_at_most_n_ms_budget_then_snap_to_fast_counts(page) -> None:
    """After the profile (the test above): a person picks Latency, types a bound in ms, fits;
    then ticks "snap to fast counts" and fits again."""
    full = wait_for(page, lambda: shown(page), "milliseconds in the Latency counter")
    page.locator("select:has(option:text-is('Latency')):visible").first.select_option("Latency")
    bound = round(0.7 * full[1], 2)
    box = page.locator(".widget-text:has(label:text-is('or ≤ ms')) input:visible").first
    box.fill(str(bound))
    box.press("Enter")
    click(page, "Fit budget")
    text = wait_for(page, lambda: (t := result_text(page)) and f"asked {bound:.2f} ms" in t and t,
                    "the budget's verdict in ms")
    assert "met" in text and "not reachable" not in text
    now = wait_for(page, lambda: (s := shown(page)) and s[2] < 100.0 and s, "the counter after the budget")
    assert now[0] <= bound
    page.locator(".widget-checkbox:has-text('snap to fast counts') input:visible").first.check()
    click(page, "Fit budget")
    snapped = wait_for(page, lambda: (t := result_text(page)) and "fast counts" in t and t, "the snapped budget")
    assert re.search(r"snapped \d+ units to fast counts", snapped) and f"asked {bound:.2f} ms" in snapped
    after = wait_for(page, lambda: shown(page), "the counter after the snapped budget")
    assert after[0] <= bound
    click(page, "Reset to full")
    wait_for(page, lambda: (s := shown(page)) and s[2] == 100.0, "the full latency again")


def test_the_step_curve_shows_for_a_selected_unit(page) -> None:
    selector = page.locator(".widget-dropdown:has(> label:text-is('highlight')) select")
    selector.select_option(index=1)
    caption = page.locator(".widget-html:has-text('Latency steps of'):visible").first
    text = wait_text(caption, lambda t: "fast counts are multiples of" in t, "the unit's step curve caption")
    assert re.search(r"now \d+: [\d.]+ ms", text)
    steps_box = ".widget-vbox:has(> .widget-hbox > .widget-html:has-text('Latency steps of'))"
    plot = page.locator(f"{steps_box} > img.widget-image").first
    wait_for(page, lambda: plot.count() and plot.bounding_box() and plot.bounding_box()["height"] > 50,
             "the step curve's image")
    handle = page.locator(f"{UNIT_SLIDER} .noUi-handle").first
    press(page, handle, "Home")  # the plot follows the slider (debounced)
    wait_text(caption, lambda t: t != text and "now " in t, "the curve redrawn at the new count")
    click(page, "Measure steps")  # the unit's layers timed at its top counts: the divisor that removes cliffs
    wait_text(caption, lambda t: re.search(r"measured: divisor \d+ removes its cliffs", t), "the measured steps",
              timeout=180)
    selector.select_option(index=0)
    wait_for(page, lambda: page.locator(".widget-html:has-text('Latency steps of'):visible").count() == 0,
             "the step curve hidden with no unit selected")
