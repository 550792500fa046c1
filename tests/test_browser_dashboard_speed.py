"""How fast the dashboard page is for a person, in a real browser (Debian's chromium): with a warm
kernel (Voilà's preheated kernel: started, the notebook run, the model built and traced before
any page asks), the time from navigation to the first slider, over 5 loads each made once the
warm kernel is ready; 5 reloads back to back and the kernels alive after them; the time from a
key press on a unit slider to the counters' change, on ResNet-18 and ResNet-50.

The figures are printed (run with -s), not asserted: speed lives in measurements (on a busy
2-core machine they vary). What is asserted is that each spaced load took a warm kernel.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from razor_widgets.dashboard.server import WARM_KERNELS

from browser_pages import SLIDER, WATCH_PAGE, Server, dashboard_server, kernels, wait_for_kernels

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
LOADS = 5
UNIT_HANDLE = ".widget-slider:has(> label.widget-label[title*=' channels, ']):visible .noUi-handle"


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Iterator[Callable[..., Server]]:
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    with ExitStack() as servers:
        yield lambda *args: servers.enter_context(dashboard_server(tmp_path_factory.mktemp("speed"), *args,
                                                                   env=dict(os.environ, PYTHONPATH=path)))


def kernel_cpu(dashboard: Server) -> float:
    """CPU seconds used so far by the server's kernels (their /proc stat)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            mine = int(fields[1]) == dashboard.process.pid
            if mine and b"ipykernel_launcher" in (stat.parent / "cmdline").read_bytes():
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return total


def wait_until_warm(dashboard: Server, expected: int, timeout: float = 300) -> float:
    """Wait until ``expected`` kernels run and have used no CPU for 2 s (the warm one traced its
    model); the seconds it took."""
    started = time.monotonic()
    wait_for_kernels(dashboard, expected, timeout)
    last, quiet_since = kernel_cpu(dashboard), time.monotonic()
    while time.monotonic() - quiet_since < 2.0:
        assert time.monotonic() - started < timeout, "the warm kernel never went idle"
        time.sleep(0.25)
        now = kernel_cpu(dashboard)
        if now - last > 0.05:
            last, quiet_since = now, time.monotonic()
    return time.monotonic() - started


def first_slider(page, url: str | None) -> float:
    """Navigate (or reload); seconds from navigation to the first unit slider."""
    if url is None:
        page.reload(wait_until="commit")
    else:
        page.goto(url, wait_until="commit")
    page.wait_for_selector(SLIDER, timeout=300_000)
    return page.evaluate("window.__seen")["slider"] / 1000


def slider_latency(page, moves: int = 20) -> list[float]:
    """Milliseconds from each key press on the first unit slider to the counters' change."""
    handle = page.locator(UNIT_HANDLE).first
    handle.focus()
    page.evaluate("""() => {
        window.__keys = []; window.__changes = [];
        document.addEventListener('keydown', () => window.__keys.push(performance.now()), true);
        const table = document.querySelector('table');
        new MutationObserver(() => window.__changes.push(performance.now()))
            .observe(table.parentNode, {childList: true, subtree: true, characterData: true});
    }""")
    latencies = []
    for i in range(moves):
        page.evaluate("() => { window.__changes = []; }")
        page.keyboard.press("ArrowLeft" if i < moves // 2 else "ArrowRight")
        page.wait_for_function("() => window.__changes.length > 0", timeout=60_000)
        key, change = page.evaluate("() => [window.__keys[window.__keys.length - 1], window.__changes[0]]")
        latencies.append(change - key)
        page.wait_for_timeout(150)
    return latencies


def summary(values: list[float], unit: str) -> str:
    return (f"median {statistics.median(values):.{1 if unit == 's' else 0}f} {unit} "
            f"({', '.join(f'{v:.1f}' if unit == 's' else f'{v:.0f}' for v in values)})")


def test_first_slider_reloads_and_latency_resnet18(browser, start) -> None:
    dashboard = start()  # resnet18, 1x3x224x224
    ready = wait_until_warm(dashboard, WARM_KERNELS)
    print(f"\nResNet-18: the first warm kernel ready (started, traced, idle) {ready:.1f} s after the server")
    spaced = []
    for _ in range(LOADS):  # a person arriving once the warm kernel is ready
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.add_init_script(WATCH_PAGE)
        spaced.append(first_slider(page, dashboard.url))
        page.goto("about:blank")  # leaving the page ends its kernel (closing a headless tab would not)
        page.close()
        wait_until_warm(dashboard, WARM_KERNELS)
    assert dashboard.log.read_text().count("Using pre-heated kernel") >= LOADS
    print(f"first slider, loads with a warm kernel ready: {summary(spaced, 's')}")
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.add_init_script(WATCH_PAGE)
    back_to_back = [first_slider(page, dashboard.url)] + [first_slider(page, None) for _ in range(LOADS - 1)]
    print(f"first slider, {LOADS} loads back to back (reloads): {summary(back_to_back, 's')}")
    waited = wait_for_kernels(dashboard, 1 + WARM_KERNELS, timeout=120)
    print(f"kernels alive after {LOADS} loads back to back: {kernels(dashboard)} (the page's and "
          f"{WARM_KERNELS} warm; {waited:.1f} s after the last load)")
    wait_until_warm(dashboard, 1 + WARM_KERNELS)
    print(f"ResNet-18 slider -> counters: {summary(slider_latency(page), 'ms')}")
    page.close()


def test_latency_resnet50(browser, start) -> None:
    dashboard = start("resnet50")
    wait_until_warm(dashboard, WARM_KERNELS)
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.add_init_script(WATCH_PAGE)
    print(f"\nResNet-50: first slider {first_slider(page, dashboard.url):.1f} s with a warm kernel")
    wait_until_warm(dashboard, 1 + WARM_KERNELS)
    print(f"ResNet-50 slider -> counters: {summary(slider_latency(page), 'ms')}")
    page.close()
