"""The explorer's Memory counter in a real browser (Debian's chromium, playwright), on the
``razor-widgets dashboard hf:llama`` page: typing a sequence length and a batch, and dropping a
KV group with the keyboard, show the engine's weights + KV cache bytes."""
from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator

import pytest

from razor_widgets import ChannelMutator, unit_role
from razor_widgets.model_loading import resolve_model

from browser_pages import UNIT_SLIDER, dashboard_server, press

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

pytest.importorskip("transformers")
TOKENS = (1, 8)


@pytest.fixture(scope="module")
def llama_page_url(tmp_path_factory) -> Iterator[str]:
    with dashboard_server(tmp_path_factory.mktemp("dashboard_memory"), "hf:llama", "--input-shape",
                          *map(str, TOKENS)) as server:
        yield server.url


@pytest.fixture(scope="module")
def engine() -> ChannelMutator:
    source = resolve_model("hf:llama")
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(source.load(), source.example.with_shape(TOKENS).make())
    return mutator


def shown_memory(locator) -> tuple[int, int]:
    match = re.search(r"Memory\s+([\d,]+) B of ([\d,]+) B", locator.inner_text())
    assert match, f"no memory figure in {locator.inner_text()!r}"
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


def wait_memory(locator, expected: tuple[int, int], what: str) -> None:
    deadline = time.monotonic() + 30
    while shown_memory(locator) != expected:
        assert time.monotonic() < deadline, f"{what}: the page shows {shown_memory(locator)}, expected {expected}"
        time.sleep(0.05)


def type_into(page, description: str, value: int) -> None:
    box = page.locator(f".rw-memory .widget-text:has(label:text-is('{description}')) input").first
    box.fill(str(value))
    box.press("Enter")


def test_typing_a_length_and_batch_and_dropping_a_kv_group_change_the_memory(browser, llama_page_url, engine):
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    try:
        page.goto(llama_page_url, wait_until="commit")
        sliders = page.locator(UNIT_SLIDER)
        sliders.first.wait_for(timeout=180_000)
        memory = page.locator(".rw-memory-text:visible").first
        engine.set_max_choices()
        res = engine.resources()
        wait_memory(memory, (res.memory(2048, 1), res.memory(2048, 1, original=True)), "the first figure")

        type_into(page, "seq length", 4096)
        type_into(page, "batch", 8)
        wait_memory(memory, (res.memory(4096, 8), res.memory(4096, 8, original=True)), "seq length 4096, batch 8")

        names = [label.get_attribute("title").split(": ", 1)[0]
                 for label in sliders.locator("label.widget-label").all()]
        kv = next(i for i, name in enumerate(names) if unit_role(engine.unit(name)).kind == "kv_groups")
        unit = engine.unit(names[kv])
        press(page, sliders.nth(kv).locator(".noUi-handle"), "ArrowLeft")
        engine.set_choices({unit.name: (unit.num_channels - 1) / unit.num_channels})
        dropped = engine.resources()
        assert dropped.kv_cache_bytes(4096, 8) < res.kv_cache_bytes(4096, 8)
        wait_memory(memory, (dropped.memory(4096, 8), res.memory(4096, 8, original=True)), "a KV group dropped")
    finally:
        page.close()
