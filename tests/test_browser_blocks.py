"""Depth as a choice in a real browser (issue 28): on a Voilà page of a ResNet-18 explorer, a
person drops a block with its keep/drop toggle, the counters follow, the graph greys the block's
layers, Undo/Redo step over it, and a budget fitted afterwards keeps the block dropped.

Recipe: docs/browser-testing.md of the shared docs; helpers come from browser_pages.py.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from browser_pages import (
    click,
    counters,
    engine_counts,
    prepared_resnet18,
    voila_server,
    wait_for,
    write_notebook,
)

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier

EXPLORER_CELL = ("import torch, torchvision\nfrom razor_widgets import PruningExplorer\n"
                 "torch.manual_seed(0)\n"
                 "explorer = PruningExplorer(torchvision.models.resnet18().eval(), torch.randn(1, 3, 224, 224))\n"
                 "explorer")
BLOCK = "layer1.1"
DROPPED_FILL = "#f2f2f2"


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory) -> Iterator:
    base = tmp_path_factory.mktemp("voila_blocks")
    with voila_server(base, write_notebook(base / "blocks.ipynb", EXPLORER_CELL)) as url:
        page = browser.new_page(viewport={"width": 1700, "height": 1300})
        page.goto(url, timeout=120_000)
        page.locator("button:has-text('Random')").wait_for(timeout=180_000)
        yield page
        page.close()


def toggle(page, block: str, choice: str):
    return page.locator(f".widget-hbox:has(span:text-is('{block}')) .rw-block-toggle button:has-text('{choice}')")


def fill(page, node: str) -> str:
    return page.locator(f".rw-node[data-node='{node}']").get_attribute("fill")


def test_drop_a_block_grey_it_undo_redo_and_fit_a_budget(page) -> None:
    engine = prepared_resnet18()
    assert "Blocks (depth): 5 removable, 3 must stay" in page.inner_text("body")
    assert "must stay: its shortcut is not the identity" in page.inner_text("body")
    wait_for(page, lambda: counters(page) == engine_counts(engine), "the full model")
    full = counters(page)
    toggle(page, BLOCK, "drop").click()
    engine.set_choices({f"block:{BLOCK}": "drop"})
    dropped = engine_counts(engine)
    assert dropped["Params"][0] < full["Params"][0]
    wait_for(page, lambda: counters(page) == dropped, "the counts without the block")
    wait_for(page, lambda: fill(page, f"{BLOCK}.conv1") == DROPPED_FILL, "the block's layers greyed")
    assert fill(page, "layer1.0.conv1") != DROPPED_FILL
    click(page, "Undo")
    wait_for(page, lambda: counters(page) == full, "the full model after undo")
    wait_for(page, lambda: fill(page, f"{BLOCK}.conv1") != DROPPED_FILL, "the block coloured again")
    assert "mod-active" not in (toggle(page, BLOCK, "drop").get_attribute("class") or "")
    click(page, "Redo")
    wait_for(page, lambda: counters(page) == dropped, "the block dropped again after redo")
    wait_for(page, lambda: "mod-active" in (toggle(page, BLOCK, "drop").get_attribute("class") or ""),
             "the drop toggle shown pressed")
    click(page, "Fit budget")  # uniform, the default: the widths follow, the dropped block stays dropped
    wait_for(page, lambda: "% of the original" in page.inner_text("body"), "the budget's verdict")
    macs = counters(page)["MACs"]
    assert macs[0] <= macs[1] * 0.5 + 1
    assert "mod-active" in (toggle(page, BLOCK, "drop").get_attribute("class") or "")
    click(page, "Undo")
    wait_for(page, lambda: counters(page) == dropped, "the block-dropped model after undoing the budget")
