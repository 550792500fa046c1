"""A real browser (Debian's chromium, driven by playwright) moves a unit slider with the keyboard,
in JupyterLab on the quickstart notebook and on the page of ``razor-widgets dashboard``, and the
counters must show what the engine computes for the new choice.

The recipe is docs/browser-testing.md of the shared docs; the helpers are tests/browser_pages.py
and the ``browser`` fixture tests/conftest.py. Locally the test skips when chromium or playwright
is missing; with CI set, a missing browser fails it (``.ci/run`` installs both).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser_pages import (
    UNIT_SLIDER,
    counters,
    dashboard_server,
    engine_counts,
    jupyterlab_server,
    new_page,
    open_and_run_notebook,
    prepared_resnet18,
    press,
    shown_counts,
)

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
PRESSES = 3  # ArrowLeft presses on the slider: each is one step of the unit's choices


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory) -> Iterator[str]:
    """A JupyterLab server on loopback with a copy of the quickstart notebook; its base URL."""
    with jupyterlab_server(tmp_path_factory.mktemp("lab"), [QUICKSTART]) as url:
        yield url


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Iterator[str]:
    """``razor-widgets dashboard`` (no model: the default) on a free port; its URL."""
    with dashboard_server(tmp_path_factory.mktemp("dashboard")) as server:
        yield server.url


def move_slider_and_check(page, scope: str, choices: dict) -> None:
    """Focus the handle of the first visible unit slider in ``scope`` and press ArrowLeft
    ``PRESSES`` times: the unit's label must show ``PRESSES`` steps fewer channels and the
    counters what the engine computes for that choice (``choices`` for the other units)."""
    slider = page.locator(f"{scope} {UNIT_SLIDER}").first
    slider.wait_for(timeout=180_000)
    unit_name = slider.locator("label.widget-label").get_attribute("title").split(": ", 1)[0]
    kept = slider.locator("xpath=following-sibling::*[1]")

    mutator = prepared_resnet18()
    unit = mutator.unit(unit_name)
    full = f"{unit.num_channels}/{unit.num_channels}"
    assert kept.inner_text() == full
    mutator.set_choices(choices)
    assert counters(page, scope) == engine_counts(mutator)  # the page before the move
    expected_kept = unit.num_channels - PRESSES * unit.repeats  # one key press = one step of the unit
    mutator.set_choices({unit_name: expected_kept / unit.num_channels})
    assert unit.activated_channels == expected_kept
    expected = engine_counts(mutator)
    assert expected["Params"][0] < expected["Params"][1]

    started = time.monotonic()
    press(page, slider.locator(".noUi-handle"), "ArrowLeft", PRESSES)
    table = page.locator(f"{scope} table:visible").first
    while True:
        shown_kept, text = kept.inner_text(), table.inner_text()
        if shown_kept == f"{expected_kept}/{unit.num_channels}" and shown_counts(text) == expected:
            break
        if time.monotonic() - started > 30:
            assert shown_kept == f"{expected_kept}/{unit.num_channels}"
            assert shown_counts(text) == expected
        time.sleep(0.05)
    print(f"\n{unit_name}: {PRESSES} x ArrowLeft, {shown_kept} kept, counters right after "
          f"{time.monotonic() - started:.2f} s")


@pytest.mark.notebook  # runs notebooks/01_quickstart.ipynb
def test_quickstart_in_jupyterlab(browser, jupyterlab) -> None:
    with new_page(browser) as page:
        open_and_run_notebook(page, f"{jupyterlab}/lab/tree/{QUICKSTART.name}?reset")
        page.wait_for_function("[...document.querySelectorAll('.jp-OutputArea-output')]"
                               ".some(e => e.innerText.includes('params') && e.innerText.includes('torch.Size'))",
                               timeout=180_000)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']:visible")
        assert not [e for e in errors.all_inner_texts() if "Error" in e]
        # the notebook set layer1.0.conv1 to 0.5 from code: the page shows it too
        move_slider_and_check(page, ".jp-Notebook", {"layer1.0.conv1_(0, 64)_64": 0.5})


def test_dashboard_page(browser, dashboard) -> None:
    with new_page(browser) as page:
        page.goto(dashboard, timeout=120_000)
        move_slider_and_check(page, "body", {})
