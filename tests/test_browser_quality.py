"""The Quality section in a real browser (Debian's chromium driven by playwright, JupyterLab):
a person clicks Evaluate, runs a sensitivity scan, fits a budget "by sensitivity", evaluates
again and turns on live scores; the page must show what the engine computes."""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Iterator

import pytest
import torch
from test_browser import answers_200, browser, free_port, stop, wait_until  # noqa: F401 (browser: a fixture)

from razor_widgets import ChannelMutator, fit_budget, sensitivity_scan

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
    root, workspaces, settings = base / "root", base / "workspaces", base / "settings"
    root.mkdir()
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate((SETUP, SHOW))]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    (root / "quality.ipynb").write_text(json.dumps(notebook))
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
               f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={workspaces}",
               "--LabApp.expose_app_in_browser=True"] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = base / "server.log"
    with open(log, "w") as out:
        import subprocess
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings)))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_200(f"{url}/api/status"), "JupyterLab", server, log)
        yield url
    finally:
        stop(server)


def wait_text(locator, predicate, what: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = locator.inner_text()
        if predicate(text):
            return text
        assert time.monotonic() < deadline, f"{what}: the page shows {text!r}"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_person_evaluates_scans_and_fits_by_sensitivity(browser, lab) -> None:  # noqa: F811
    baseline, budget_score = expected_scores()
    page = browser.new_page(viewport={"width": 1600, "height": 1400})
    try:
        page.goto(f"{lab}/lab/tree/quality.ipynb?reset")
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                               "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=120_000)
        page.evaluate("""async () => {
            const panel = window.jupyterapp.shell.currentWidget;
            await panel.context.ready;
            await panel.sessionContext.ready;
            await window.jupyterapp.commands.execute('notebook:run-all-cells');
        }""")
        evaluate = page.locator("button:has-text('Evaluate'):visible").first
        evaluate.wait_for(timeout=180_000)
        score = page.locator(".widget-html:has-text('score'):visible").first
        evaluate.click()
        wait_text(score, lambda t: f"score {baseline:.4g} (baseline {baseline:.4g}" in t, "Evaluate")

        ratios = page.locator(".widget-text:has(label:text-is('ratios')) input:visible").first
        ratios.fill("0.5")
        ratios.press("Enter")
        page.locator("button:has-text('Sensitivity scan'):visible").first.click()
        message = page.locator(".widget-html:has-text('scanned'):visible").first
        message.wait_for(timeout=120_000)
        assert "scanned 2 units x 1 ratios (3 evaluations)" in message.inner_text()

        page.locator("button:text-is('by sensitivity'):visible").first.click()
        page.locator("button:has-text('Fit budget'):visible").first.click()
        result = page.locator(".widget-label:has-text('by sensitivity'):visible").first
        wait_text(result, lambda t: "met" in t, "Fit budget")
        evaluate.click()
        wait_text(score, lambda t: f"score {budget_score:.4g} (baseline" in t, "Evaluate after the budget")

        page.locator(".widget-checkbox:has-text('live') input:visible").first.check()
        handle = page.locator(".widget-slider .noUi-handle:visible").nth(1)  # the first unit's slider
        handle.focus()
        page.keyboard.press("ArrowLeft")
        wait_text(score, lambda t: t.rstrip().endswith("live"), "live score after a slider move")
    finally:
        page.close()
