"""A person sees what each unit is, in a real browser (Debian's chromium driven by playwright), on
a Voilà page of an explorer of a tiny vision transformer: the sliders say "hidden size" and "MLP
of layer 1", so does the highlight list, the filter box finds units by what they are, and the
labelled slider moves its unit.

The recipe is docs/browser-testing.md of the shared docs; helpers come from browser_pages.py,
the ``browser`` fixture from conftest.py (it skips locally without chromium; CI fails then).
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from browser_pages import press, voila_server, write_notebook

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

VIT_CELL = ("import torch\nfrom torchvision.models.vision_transformer import VisionTransformer\n"
            "from razor_widgets import PruningExplorer\ntorch.manual_seed(0)\n"
            "net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,\n"
            "                        mlp_dim=64, num_classes=10).eval()\n"
            "explorer = PruningExplorer(net, torch.randn(1, 3, 32, 32))\nexplorer")
MLP1 = "MLP of layer 1 · 2 layers"


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory) -> Iterator:
    base = tmp_path_factory.mktemp("voila_labels")
    with voila_server(base, write_notebook(base / "vit.ipynb", VIT_CELL)) as url:
        page = browser.new_page(viewport={"width": 1700, "height": 1300})
        page.goto(url, timeout=120_000)
        page.locator("button:has-text('Random')").wait_for(timeout=180_000)
        yield page
        page.close()


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
    press(page, slider.locator(".noUi-handle"), "ArrowLeft", 3)
    page.wait_for_function("e => e.innerText.trim() === '61/64'", arg=kept.element_handle(), timeout=30_000)
