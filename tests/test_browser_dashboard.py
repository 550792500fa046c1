"""The dashboard page as a person uses it, in a real browser (Debian's chromium, playwright):

- while the kernel builds and traces the model the page says so, then the explorer appears
  (the page-load time, navigation to the first slider, is measured and printed);
- reloading the page several times leaves one kernel, and leaving the page ends it;
- a tab closed without a word (headless chromium sends no beacon when a tab closes, nor
  does a crashed browser) has its kernel culled once idle;
- a model that cannot be traced shows the TraceError's text on the page.

Kernels are counted as the server's ``ipykernel_launcher`` child processes (Linux /proc). Locally the tests
skip without chromium or playwright; with CI set they fail instead (the ``browser`` fixture of conftest.py).
"""
from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from razor_widgets.dashboard.server import WARM_KERNELS

from browser_pages import SLIDER, WATCH_PAGE, Server, dashboard_server, kernels, new_page, wait_for_kernels

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

TESTS = Path(__file__).resolve().parent
RELOADS = 4  # page loads: the first and three reloads
@pytest.fixture(scope="module")
def start_dashboard(tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """Starts ``razor-widgets dashboard ARGS`` (tests/ on the kernels' path); stops them all at the end."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    with ExitStack() as servers:
        def start(*args: str) -> Server:
            return servers.enter_context(dashboard_server(tmp_path_factory.mktemp("dashboard"), *args,
                                                          env=dict(os.environ, PYTHONPATH=path)))

        yield start


def load(page, url: str | None = None) -> dict:
    """Open ``url`` (or reload); wait for the explorer's first slider. Seconds from navigation to
    the status line and to the first slider."""
    if url is None:
        page.reload(wait_until="commit")
    else:
        page.goto(url, wait_until="commit")
    page.wait_for_selector(SLIDER, timeout=180_000)
    seen = page.evaluate("window.__seen")
    return {what: ms / 1000 for what, ms in seen.items()}


def test_reloads_leave_one_kernel_and_leaving_the_page_ends_it(browser, start_dashboard) -> None:
    dashboard = start_dashboard()  # the default model, ResNet-18; idle culling at its default (300 s)
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.add_init_script(WATCH_PAGE)
    loads = [load(page, dashboard.url)]
    for _ in range(RELOADS - 1):
        loads.append(load(page))
    for seen in loads:  # a kernel still tracing says so before the explorer; a warm one shows it at once
        assert seen.get("status", 0.0) < seen["slider"]
    waited = wait_for_kernels(dashboard, 1 + WARM_KERNELS, timeout=60)  # reloaded pages ended theirs
    to_slider = [seen["slider"] for seen in loads]
    warm = sum("status" not in seen for seen in loads)
    print(f"\npage load ({warm} of {len(loads)} with the explorer at once, from a warm kernel): "
          f"to the first slider: median {statistics.median(to_slider):.1f} s "
          f"({', '.join(f'{t:.1f}' for t in to_slider)})")
    print(f"kernels alive after {RELOADS} loads of the page: the page's and {WARM_KERNELS} warm "
          f"({waited:.1f} s after the last load)")
    page.goto("about:blank")  # leaving the page ends its kernel
    waited = wait_for_kernels(dashboard, WARM_KERNELS, timeout=30)
    page.close()
    print(f"kernels alive after leaving the page: the {WARM_KERNELS} warm one(s) ({waited:.1f} s after)")
    log = dashboard.log.read_text()
    for alarming in ("_xsrf", "not trusted", "without encryption", "WARNING", "cannot be longer"):
        assert alarming not in log


def test_an_untraceable_model_shows_its_error_and_a_lost_tab_is_culled(browser, start_dashboard) -> None:
    dashboard = start_dashboard("helpers:PathDependsOnInput", "--input-size", "16", "--cull-idle", "3")
    with new_page(browser) as page:  # closed without beforeunload or a beacon: the idle kernel is culled
        page.goto(dashboard.url, wait_until="commit")
        error = page.locator(".razor-dashboard-error")
        error.wait_for(timeout=180_000)
        # the class and the text arrive as two widget updates: wait for the text too
        page.wait_for_function("el => el.innerText.includes('Cannot explore')", arg=error.element_handle(),
                               timeout=30_000)
        text = error.inner_text()
        assert "Cannot explore helpers:PathDependsOnInput" in text and "TraceError" in text
        assert "depends on the input's values" in text
        assert page.locator(SLIDER).count() == 0
        assert "There was an error when executing cell" not in page.content()  # not Voila's generic page
        assert kernels(dashboard) == 1 + WARM_KERNELS
    waited = wait_for_kernels(dashboard, WARM_KERNELS, timeout=30)  # the warm kernel is never culled
    print(f"\nkernel of a tab gone without a word culled {waited:.1f} s later (--cull-idle 3)")
