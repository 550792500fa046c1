"""The Quality section in a real browser (Debian's chromium driven by playwright, JupyterLab):
a person clicks Evaluate, runs a sensitivity scan, fits a budget "by sensitivity", evaluates
again and turns on live scores; the page must show what the engine computes."""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch

from razor_widgets import ChannelMutator, fit_budget, sensitivity_scan

from browser_pages import click, jupyterlab_server, new_page, open_and_run_notebook, press, wait_text, write_notebook

pytestmark = pytest.mark.browser  # a real browser: not in the fast tier (README, "Tests")

SETUP = """import torch
from torch import nn
from razor_widgets import PruningExplorer

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    reference = model(x)


def score(m):
    with torch.no_grad():
        return -float((m(x) - reference).pow(2).mean())
"""
SHOW = """explorer = PruningExplorer(model, x[:1], eval_fn=score, channel_unit_cfg="L1MutableChannelUnit")
explorer"""


def expected_scores() -> tuple[float, float]:
    """What the page must show after scan at 0.5 and a 50 % MACs budget by sensitivity: the
    baseline and the budget's score, computed here the same way."""
    scope: dict = {}
    exec(SETUP, scope)
    torch.set_num_threads(1)
    mutator = ChannelMutator(channel_unit_cfg="L1MutableChannelUnit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(scope["model"], example_inputs=scope["x"][:1])
    sens = sensitivity_scan(mutator, scope["score"], [0.5], progress=False)
    mutator.set_choices(fit_budget(mutator, 0.5, "macs", "sensitivity", sensitivity=sens).choices)
    return sens.baseline, scope["score"](mutator.model)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("quality_lab")
    with jupyterlab_server(base, [write_notebook(base / "quality.ipynb", SETUP, SHOW)]) as url:
        yield url


@pytest.mark.slow
def test_a_person_evaluates_scans_and_fits_by_sensitivity(browser, lab) -> None:
    baseline, budget_score = expected_scores()
    with new_page(browser, 1600, 1400) as page:
        open_and_run_notebook(page, f"{lab}/lab/tree/quality.ipynb?reset")
        evaluate = page.locator("button:has-text('Evaluate'):visible").first
        evaluate.wait_for(timeout=180_000)
        score = page.locator(".widget-html:has-text('score'):visible").first
        evaluate.click()
        wait_text(score, lambda t: f"score {baseline:.4g} (baseline {baseline:.4g}" in t, "Evaluate")

        ratios = page.locator(".widget-text:has(label:text-is('ratios')) input:visible").first
        ratios.fill("0.5")
        ratios.press("Enter")
        click(page, "Sensitivity scan")
        message = page.locator(".widget-html:has-text('scanned'):visible").first
        message.wait_for(timeout=120_000)
        assert "scanned 2 units x 1 ratios (3 evaluations)" in message.inner_text()

        page.locator("button:text-is('by sensitivity'):visible").first.click()
        click(page, "Fit budget")
        result = page.locator(".widget-label:has-text('by sensitivity'):visible").first
        wait_text(result, lambda t: "met" in t, "Fit budget")
        evaluate.click()
        wait_text(score, lambda t: f"score {budget_score:.4g} (baseline" in t, "Evaluate after the budget")

        page.locator(".widget-checkbox:has-text('live') input:visible").first.check()
        press(page, page.locator(".widget-slider .noUi-handle:visible").nth(1), "ArrowLeft")  # the first unit's
        wait_text(score, lambda t: t.rstrip().endswith("live"), "live score after a slider move")
