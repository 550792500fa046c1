"""A person sees what each unit is, in a real browser (Debian's chromium driven by playwright), on
a Voilà page of an explorer of a tiny vision transformer: the sliders say "hidden size" and "MLP
of layer 1", so does the highlight list, the filter box finds units by what they are, and the
labelled slider moves its unit.

The recipe is docs/browser-testing.md of the shared docs; fixtures come from test_browser.py.
Locally the test skips when chromium or playwright is missing; with CI set, that fails them.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import nbformat
import pytest
from test_browser import accepts_connections, browser, free_port, stop, wait_until  # noqa: F401

VIT_CELL = ("import torch\nfrom torchvision.models.vision_transformer import VisionTransformer\n"
            "from razor_widgets import PruningExplorer\ntorch.manual_seed(0)\n"
            "net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,\n"
            "                        mlp_dim=64, num_classes=10).eval()\n"
            "explorer = PruningExplorer(net, torch.randn(1, 3, 32, 32))\nexplorer")
MLP1 = "MLP of layer 1 · 2 layers"


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory) -> Iterator:  # noqa: F811
    base = tmp_path_factory.mktemp("voila_labels")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(VIT_CELL)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, base / "vit.ipynb")
    port, log = free_port(), base / "voila.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "voila", str(base / "vit.ipynb"), "--no-browser",
                                   f"--port={port}", "--Voila.ip=127.0.0.1"], stdout=out, stderr=subprocess.STDOUT,
                                  cwd=base)
    try:
        wait_until(lambda: accepts_connections(port), "voila", server, log)  # never GET / to probe
        page = browser.new_page(viewport={"width": 1700, "height": 1300})
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.locator("button:has-text('Random')").wait_for(timeout=180_000)
        yield page
        page.close()
    finally:
        stop(server)


def _slider(page, label: str):
    return page.locator(f".widget-slider:has(> label.widget-label:text-is('{label}'))")


def test_sliders_and_the_highlight_list_say_what_each_unit_is(page) -> None:
    labels = page.evaluate("""() => [...document.querySelectorAll('.widget-slider > label.widget-label')]
                              .map(e => e.innerText.trim())""")
    assert {"hidden size · 15 layers", "MLP of layer 0 · 2 layers", MLP1} <= set(labels), labels
    assert "MLP of layer 1: 64" in _slider(page, MLP1).locator("label").get_attribute("title")  # the tooltip
    selector = page.locator(".widget-dropdown:has(> label:text-is('highlight')) select")
    options = selector.evaluate("e => [...e.options].map(o => o.text.replaceAll('\\u00a0', ' '))")
    assert any(o.startswith("MLP of layer 1 · encoder.layers.encoder_layer_1.mlp.0") for o in options), options


def test_the_filter_finds_units_by_what_they_are(page) -> None:
    box = page.locator("input[placeholder^='filter units']")
    box.fill("MLP")
    page.wait_for_function("""() => [...document.querySelectorAll('.widget-slider > label.widget-label')]
        .filter(e => e.offsetParent !== null && e.innerText.startsWith('hidden size')).length === 0""",
                           timeout=30_000)
    assert _slider(page, MLP1).is_visible() and _slider(page, "MLP of layer 0 · 2 layers").is_visible()
    box.fill("")
    _slider(page, "hidden size · 15 layers").wait_for(state="visible", timeout=30_000)


def test_the_labelled_slider_moves_its_unit(page) -> None:
    slider = _slider(page, MLP1)
    kept = slider.locator("xpath=following-sibling::*[1]")
    assert kept.inner_text() == "64/64"
    slider.locator(".noUi-handle").focus()
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function("e => e.innerText.trim() === '61/64'", arg=kept.element_handle(), timeout=30_000)
