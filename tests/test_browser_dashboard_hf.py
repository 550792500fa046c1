"""``razor-widgets dashboard hf:llama`` in a real browser (Debian's chromium, playwright): the page
of a tiny Hugging Face Llama built from config (random weights, traced on token ids) shows a
slider per unit (the hidden size, the KV groups and the MLP of each layer); moving a slider with
the keyboard, then dragging one with the mouse, changes the counters to what the engine computes.

Locally the test skips without chromium or playwright; with CI set it fails instead (the
``browser`` fixture of tests/conftest.py; helpers: tests/browser_pages.py).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import pytest

from razor_widgets import ChannelMutator
from razor_widgets.model_loading import resolve_model

from browser_pages import UNIT_SLIDER, dashboard_server, engine_counts, new_page, press, shown_counts

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

pytest.importorskip("transformers")
TOKENS = (1, 8)  # batch x sequence length the page traces on
PRESSES = 3


@pytest.fixture(scope="module")
def llama_page_url(tmp_path_factory) -> Iterator[str]:
    """``razor-widgets dashboard hf:llama --input-shape 1 8`` on a free port; its URL."""
    with dashboard_server(tmp_path_factory.mktemp("dashboard_hf"), "hf:llama", "--input-shape",
                          *map(str, TOKENS)) as server:
        assert f"hf:llama (input 1x8 tokens) at {server.url}" in server.log.read_text()
        yield server.url


@pytest.fixture(scope="module")
def engine() -> ChannelMutator:
    """The engine on the page's model (the counts depend on the shapes, not on the token ids)."""
    source = resolve_model("hf:llama")
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(source.load(), source.example.with_shape(TOKENS).make())
    return mutator


def _wait_for_counts(counters, kept, expected_kept: str, expected: dict, what: str) -> float:
    """Wait until the kept label and the counters show what is expected; the seconds it took."""
    started = time.monotonic()
    while True:
        shown_kept, text = kept.inner_text(), counters.inner_text()
        if shown_kept == expected_kept and shown_counts(text) == expected:
            return time.monotonic() - started
        if time.monotonic() - started > 30:
            raise AssertionError(f"{what}: the page shows {shown_kept} and {shown_counts(text)}, "
                                 f"expected {expected_kept} and {expected}")
        time.sleep(0.05)


def test_moving_and_dragging_a_slider_of_hf_llama_changes_the_counts(browser, llama_page_url, engine) -> None:
    with new_page(browser) as page:
        started = time.monotonic()
        page.goto(llama_page_url, wait_until="commit")
        sliders = page.locator(UNIT_SLIDER)
        sliders.first.wait_for(timeout=180_000)
        loaded = time.monotonic() - started
        names = [label.get_attribute("title").split(": ", 1)[0]
                 for label in sliders.locator("label.widget-label").all()]
        assert sorted(names) == sorted(u.name for u in engine.mutable_units)  # hidden size, KV groups, MLPs: 5 sliders
        counters = page.locator("table:visible").first
        engine.set_max_choices()
        assert shown_counts(counters.inner_text()) == engine_counts(engine)

        # the keyboard: PRESSES steps of one unit (an MLP width)
        mlp = next(i for i, name in enumerate(names) if ".mlp." in name)
        unit = engine.unit(names[mlp])
        slider = sliders.nth(mlp)
        kept = slider.locator("xpath=following-sibling::*[1]")
        expected_kept = unit.num_channels - PRESSES * unit.repeats
        engine.set_choices({unit.name: expected_kept / unit.num_channels})
        expected = engine_counts(engine)
        assert expected["Params"][0] < expected["Params"][1]
        press(page, slider.locator(".noUi-handle"), "ArrowLeft", PRESSES)
        moved = _wait_for_counts(counters, kept, f"{expected_kept}/{unit.num_channels}", expected, "key presses")

        # the mouse: drag the handle of another unit (the hidden size) to the left
        hidden = next(i for i, name in enumerate(names) if i != mlp and ".mlp." not in name and "q_proj" not in name)
        slider = sliders.nth(hidden)
        kept = slider.locator("xpath=following-sibling::*[1]")
        handle = slider.locator(".noUi-handle").bounding_box()
        track = slider.locator(".noUi-target").bounding_box()
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + track["width"] * 0.5, handle["y"] + handle["height"] / 2, steps=8)
        page.mouse.up()
        hidden_unit = engine.unit(names[hidden])
        deadline = time.monotonic() + 30
        while kept.inner_text() == f"{hidden_unit.num_channels}/{hidden_unit.num_channels}":
            assert time.monotonic() < deadline, "the drag did not move the slider"
            time.sleep(0.05)
        time.sleep(0.5)  # the drag's last value
        dragged = int(kept.inner_text().split("/")[0])
        assert 0 < dragged < hidden_unit.num_channels
        engine.set_choices({hidden_unit.name: dragged / hidden_unit.num_channels})
        assert hidden_unit.activated_channels == dragged
        expected = engine_counts(engine)
        _wait_for_counts(counters, kept, f"{dragged}/{hidden_unit.num_channels}", expected, "the drag")
        print(f"\nhf:llama page: first slider {loaded:.1f} s after navigation; {PRESSES} key presses on "
              f"{unit.name} -> counters in {moved:.2f} s; hidden size dragged to {dragged}/{hidden_unit.num_channels}")
