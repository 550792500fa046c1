"""What a person does with the explorer in a real browser (Debian's chromium driven by playwright):
whole-model buttons and Undo/Redo, the all-units slider, a budget, downloads, uploads and the
graph (hover, click), on a Voilà page of a ResNet-18 explorer; the graph and a download once more
in JupyterLab. It also measures the slider -> counters latency in the page.

The recipe is docs/browser-testing.md of the shared docs; helpers come from browser_pages.py.
Locally the tests skip when chromium or playwright is missing; with CI set, that fails them.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator

import pytest
import torch

from razor_widgets import PlanError, load_choices, save_choices

from browser_pages import (
    UNIT_SLIDER,
    click,
    counters,
    download,
    engine_counts,
    jupyterlab_server,
    new_page,
    open_and_run_notebook,
    prepared_resnet18,
    press,
    upload_plan,
    voila_server,
    wait_for,
    write_notebook,
)

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

EXPLORER_CELL = ("import torch, torchvision\nfrom razor_widgets import PruningExplorer\n"
                 "torch.manual_seed(0)\n"
                 "explorer = PruningExplorer(torchvision.models.resnet18().eval(), torch.randn(1, 3, 224, 224))\n"
                 "explorer")
SMALL_CELL = ("import torch\nfrom torch import nn\nfrom razor_widgets import PruningExplorer\n"
              "net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3),\n"
              "                    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))\n"
              "explorer = PruningExplorer(net, torch.randn(1, 3, 16, 16))\nexplorer")


@pytest.fixture(scope="module")
def voila_page(tmp_path_factory) -> Iterator[str]:
    """Voilà serving a notebook that shows a ResNet-18 explorer; the page's URL."""
    base = tmp_path_factory.mktemp("voila")
    with voila_server(base, write_notebook(base / "explorer.ipynb", EXPLORER_CELL)) as url:
        yield url


@pytest.fixture(scope="module")
def page(browser, voila_page):
    page = browser.new_page(viewport={"width": 1700, "height": 1300}, accept_downloads=True)
    page.goto(voila_page, timeout=120_000)
    page.locator("button:has-text('Random')").wait_for(timeout=180_000)
    yield page
    page.close()


@pytest.fixture(scope="module")
def engine():
    """The engine on the page's model, for the figures the page must show."""
    return prepared_resnet18()


# -- reading the page ----------------------------------------------------------------------------
def kept_labels(page) -> list[str]:
    """The kept-channel labels beside the unit sliders (``'32/64'``)."""
    return page.evaluate("""() => [...document.querySelectorAll('.widget-hbox > .widget-slider + .widget-label')]
                            .map(e => e.innerText.trim())""")


def is_full(page, engine) -> bool:
    engine.set_choices(engine.max_choices)
    labels = kept_labels(page)
    full = all(a == b for a, b in (t.split(" ")[0].split("/") for t in labels))
    return bool(labels) and full and counters(page) == engine_counts(engine)


def global_handle(page):
    return page.locator(".widget-slider:has(> label:text-is('all units')) .noUi-handle")


def test_first_view_tab_titles_fit_and_highlight_says_none(page) -> None:
    labels = page.evaluate("""() => [...document.querySelectorAll('.lm-TabBar-tabLabel')]
                              .map(e => [e.innerText, e.scrollWidth <= e.clientWidth])""")
    assert [text for text, _ in labels] == ["Graph", "Channels per unit", "Params & MACs"]
    assert all(fits for _, fits in labels), labels  # no title cut off
    selector = page.locator(".widget-dropdown:has(> label:text-is('highlight')) select")
    assert selector.evaluate("e => e.options[e.selectedIndex].text") == "(none)"
    assert page.locator("label.widget-label:text-matches('conv1 · [0-9]+ layers')").count() >= 1


# -- whole-model actions are one step of the history ---------------------------------------------
def test_random_then_one_undo_restores_full_and_redo(page, engine) -> None:
    wait_for(page, lambda: is_full(page, engine), "the full model")
    full = counters(page)
    click(page, "Random")
    wait_for(page, lambda: counters(page) != full, "random choices")
    page.wait_for_timeout(600)  # let the browser echo every slider it was sent
    randomised = counters(page)
    click(page, "Undo")
    wait_for(page, lambda: is_full(page, engine), "the full model after ONE undo")
    click(page, "Redo")
    wait_for(page, lambda: counters(page) == randomised, "the random choices again after redo")
    page.wait_for_timeout(600)
    click(page, "Undo")
    wait_for(page, lambda: is_full(page, engine), "the full model after redo then undo")
    # the all-units slider follows: it shows what is kept
    assert global_handle(page).get_attribute("aria-valuenow") in ("1.0", "1", "1.00")


def test_all_units_slider_then_undo(page, engine) -> None:
    wait_for(page, lambda: is_full(page, engine), "the full model")
    press(page, global_handle(page), "ArrowLeft", 5)
    engine.set_choices({u.name: 0.95 for u in engine.mutable_units})
    page.wait_for_timeout(300)
    wait_for(page, lambda: counters(page)["Params"][0] < counters(page)["Params"][1], "a pruned model")
    click(page, "Undo")
    wait_for(page, lambda: is_full(page, engine), "the full model after one undo of a slider drag")
    assert float(global_handle(page).get_attribute("aria-valuenow")) == 1.0


def test_budget_then_undo_and_the_message_clears(page, engine) -> None:
    wait_for(page, lambda: is_full(page, engine), "the full model")
    click(page, "Fit budget")
    wait_for(page, lambda: "% of the original" in page.inner_text("body"), "the budget's verdict")
    macs = counters(page)["MACs"]
    assert macs[0] <= macs[1] * 0.5 + 1
    shown = float(global_handle(page).get_attribute("aria-valuenow"))
    assert shown < 1.0  # the all-units slider follows the fit
    click(page, "Undo")
    wait_for(page, lambda: is_full(page, engine), "the full model after undoing a budget fit")
    wait_for(page, lambda: "% of the original" not in page.inner_text("body"), "the budget message cleared")


# -- downloads and uploads -----------------------------------------------------------------------
def test_download_plan_and_model(page, engine, tmp_path) -> None:
    click(page, "Random")
    wait_for(page, lambda: counters(page)["Params"][0] < counters(page)["Params"][1], "random choices")
    started = time.monotonic()
    click(page, "Export & download")
    page.locator("a.rw-download").first.wait_for(timeout=120_000)
    print(f"\nexport until the links show: {time.monotonic() - started:.1f} s")
    plan = tmp_path / "plan.json"
    plan.write_bytes(download(page, "plan.json"))
    json.loads(plan.read_text())
    load_choices(engine, plan)  # a plan of this model
    shown = counters(page)
    assert shown == engine_counts(engine)
    model_file, state_file = tmp_path / "model.pt", tmp_path / "state.pt"
    started = time.monotonic()
    model_file.write_bytes(download(page, "_pruned.pt"))
    state_file.write_bytes(download(page, "_state_dict.pt"))
    print(f"both model files downloaded in {time.monotonic() - started:.1f} s")
    model = torch.load(model_file, weights_only=False)
    assert sum(p.numel() for p in model.parameters()) == shown["Params"][0]
    state = torch.load(state_file, weights_only=True)
    assert model.load_state_dict(state) is not None
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    click(page, "Reset to full")  # a later change removes the stale links
    wait_for(page, lambda: page.locator("a.rw-download").count() == 0, "the links removed")


def test_upload_a_plan_and_a_bad_one(page, engine, tmp_path) -> None:
    engine.set_choices({u.name: 0.5 for u in engine.mutable_units})
    plan = tmp_path / "half.json"
    save_choices(engine, plan)
    upload_plan(page, plan)
    wait_for(page, lambda: counters(page) == engine_counts(engine), "the uploaded plan's counts")
    assert "loaded the uploaded plan" in page.inner_text("body")
    before = counters(page)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"no such unit": 0.5}))
    with pytest.raises(PlanError):
        load_choices(engine, bad)
    upload_plan(page, bad)
    wait_for(page, lambda: "does not fit this model" in page.inner_text("body"), "the PlanError")
    assert counters(page) == before
    click(page, "Undo")  # the upload was one step
    wait_for(page, lambda: is_full(page, engine), "the full model after undoing the upload")


# -- the graph -----------------------------------------------------------------------------------
def test_graph_hover_and_click(page, engine) -> None:
    click(page, "Reset to full")
    wait_for(page, lambda: is_full(page, engine), "the full model")
    page.wait_for_timeout(400)  # the graph's redraw is debounced
    node = page.locator(".rw-node[data-node='layer2.0.conv1']")
    node.scroll_into_view_if_needed()
    node.hover()
    tip = page.locator(".rw-tip")
    wait_for(page, lambda: tip.is_visible() and "layer2.0.conv1" in tip.inner_text(), "the tooltip")
    assert "Conv2d" in tip.inner_text() and "kept channels: 128/128" in tip.inner_text()
    node.click()
    selector = page.locator(".widget-dropdown:has(> label:text-is('highlight')) select")
    wait_for(page, lambda: selector.input_value().replace("\xa0", " ").startswith("channels of layer2.0.conv1 · "),
             "the clicked layer's unit selected, with what it is")
    wait_for(page, lambda: page.locator(".rw-node[data-node='layer2.0.conv1'][stroke-width='2.5']").count() == 1,
             "the layer ringed")
    assert "unit layer2.0.conv1" in page.inner_text("body")
    page.locator("button.rw-zoom:has-text('Fit')").click()  # fit-to-view shrinks the whole graph into the box
    width = page.evaluate("() => document.querySelector('.rw-graph-box svg').getBoundingClientRect().width")
    box = page.evaluate("() => document.querySelector('.rw-graph-box').clientWidth")
    assert width <= box


# -- latency -------------------------------------------------------------------------------------
def test_slider_to_counters_latency(page) -> None:
    """Median time in the page from a key press on a unit slider to the counters' change."""
    click(page, "Reset to full")
    page.wait_for_timeout(500)
    slider = page.locator(f"{UNIT_SLIDER} .noUi-handle").first
    slider.focus()
    page.evaluate("""() => {
        window.__keys = []; window.__changes = [];
        document.addEventListener('keydown', () => window.__keys.push(performance.now()), true);
        const table = document.querySelector('table');
        new MutationObserver(() => window.__changes.push(performance.now()))
            .observe(table.parentNode, {childList: true, subtree: true, characterData: true});
    }""")
    latencies = []
    for i in range(20):
        page.evaluate("() => { window.__changes = []; }")
        page.keyboard.press("ArrowLeft" if i < 10 else "ArrowRight")
        page.wait_for_function("() => window.__changes.length > 0", timeout=30_000)
        key, change = page.evaluate("() => [window.__keys[window.__keys.length - 1], window.__changes[0]]")
        latencies.append(change - key)
        page.wait_for_timeout(100)
    median = statistics.median(latencies)
    print(f"\nslider -> counters in the page: median {median:.0f} ms over {len(latencies)} moves "
          f"(min {min(latencies):.0f}, max {max(latencies):.0f})")
    assert median > 0


# -- JupyterLab: the same links and graph events ---------------------------------------------------
@pytest.fixture(scope="module")
def lab_notebook(tmp_path_factory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("lab-explorer")
    notebook = write_notebook(base / "small.ipynb", SMALL_CELL)
    with jupyterlab_server(base, [notebook]) as url:
        yield f"{url}/lab/tree/small.ipynb?reset"


def test_jupyterlab_graph_click_and_plan_download(browser, lab_notebook, tmp_path) -> None:
    with new_page(browser, 1700, 1300, accept_downloads=True) as page:
        open_and_run_notebook(page, lab_notebook)
        node = page.locator(".jp-Notebook .rw-node[data-node='3']")
        node.wait_for(timeout=120_000)
        node.hover()
        wait_for(page, lambda: "Conv2d" in page.locator(".rw-tip").inner_text(), "the tooltip in JupyterLab")
        node.click()
        selector = page.locator(".widget-dropdown:has(> label:text-is('highlight')) select")
        wait_for(page, lambda: selector.input_value() != "", "the clicked layer's unit selected")
        click(page, "Random")
        click(page, "Export & download")
        page.locator("a.rw-download").first.wait_for(timeout=60_000)
        plan = json.loads(download(page, "plan.json"))
        assert [e["action"] for e in plan.pop("#history")] == ["exported"]  # the plans tried travel with it
        assert plan and all(0 < v <= 1 for v in plan.values())
