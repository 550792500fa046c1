"""Depth as a choice in a real browser (issue 28): on a Voilà page of a ResNet-18 explorer given
calibration data, a person opens a stage's section and drops a block with its keep/drop toggle
there, the counters follow, the graph greys the block's layers, Undo/Redo step over it, and the
uniform budget drops the least important blocks itself (block importance on the calibration data).

Recipe: docs/browser-testing.md of the shared docs; helpers come from browser_pages.py.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
import torchvision

from razor_widgets import ChannelMutator, block_importance, fit_budget

from browser_pages import (
    click,
    counters,
    engine_counts,
    voila_server,
    wait_for,
    write_notebook,
)

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier

EXPLORER_CELL = ("import torch, torchvision\nfrom razor_widgets import PruningExplorer\n"
                 "torch.manual_seed(0)\n"
                 "calibration = [torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))]\n"
                 "explorer = PruningExplorer(torchvision.models.resnet18().eval(), torch.randn(1, 3, 224, 224),\n"
                 "                           calibration=calibration)\n"
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
    return page.locator(f".rw-block-row:has(span:text-is('{block}')) .rw-block-toggle button:has-text('{choice}')")


def open_section(page, title_start: str) -> None:
    """Open the slider section whose title starts with ``title_start`` (if it is closed)."""
    header = page.locator(f".jupyter-widget-Collapse-header:has-text('{title_start}')").first
    if "jupyter-widget-Collapse-open" not in (header.locator("xpath=..").get_attribute("class") or ""):
        header.click()


def same_engine() -> tuple:
    """The page's model and calibration data, here: (its prepared mutator, the calibration)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, torch.randn(1, 3, 224, 224))
    return mutator, [torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))]


def fill(page, node: str) -> str:
    return page.locator(f".rw-node[data-node='{node}']").get_attribute("fill")


def test_drop_a_block_grey_it_undo_redo_and_fit_a_budget(page) -> None:
    engine, calibration = same_engine()
    assert "Blocks (depth): 5 removable, 3 must stay" in page.inner_text("body")
    assert "also drop blocks" in page.inner_text("body")  # the budget line: depth with calibration data
    open_section(page, "layer2 (")
    wait_for(page, lambda: "must stay: its shortcut is not the identity" in page.inner_text("body"),
             "layer2.0 in the layer2 section, with why it must stay")
    wait_for(page, lambda: counters(page) == engine_counts(engine), "the full model")
    full = counters(page)
    open_section(page, "layer1 (")  # the toggle sits in its stage's section
    toggle(page, BLOCK, "drop").wait_for(state="visible", timeout=30_000)
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
    click(page, "Fit budget")  # uniform, the default: widths and blocks, the least important blocks dropped
    wait_for(page, lambda: "% of the original" in page.inner_text("body"), "the budget's verdict")
    engine.set_choices({f"block:{BLOCK}": "keep"})
    fit = fit_budget(engine, 0.5, "macs", "uniform", block_scores=block_importance(engine, calibration))
    engine.set_choices(fit.choices)
    wait_for(page, lambda: counters(page) == engine_counts(engine), "the counts of the engine's fit")
    macs = counters(page)["MACs"]
    assert macs[0] <= macs[1] * 0.5 + 1
    gone = [name.split(":", 1)[1] for name, choice in fit.choices.items() if choice == "drop"]
    assert gone, fit.choices  # the budget dropped blocks by itself
    open_section(page, "layer2 (")
    open_section(page, "layer3 (")
    open_section(page, "layer4 (")
    for block in ("layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"):
        choice = "drop" if block in gone else "keep"
        wait_for(page, lambda b=block, c=choice: "mod-active" in (toggle(page, b, c).get_attribute("class") or ""),
                 f"{block}'s toggle at {choice}")
    wait_for(page, lambda: fill(page, f"{gone[0]}.conv1") == DROPPED_FILL, "a dropped block greyed")
    click(page, "Undo")
    wait_for(page, lambda: counters(page) == dropped, "the block-dropped model after undoing the budget")
