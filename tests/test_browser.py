"""A real browser (Debian's chromium, driven by playwright) moves a unit slider with the keyboard,
in JupyterLab on the quickstart notebook and on the page of ``razor-widgets dashboard``, and the
counters must show what the engine computes for the new choice.

The recipe is docs/browser-testing.md of the shared docs. Locally the test skips when chromium
or playwright is missing; with CI set, a missing browser fails it (``.ci/run`` installs both).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from razor_widgets import ChannelMutator
from razor_widgets.widgets.counters import ROWS

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
CHROMIUM = os.environ.get("RAZOR_WIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PRESSES = 3  # ArrowLeft presses on the slider: each is one step of the unit's choices


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: CI must run the browser test (.ci/run installs it)")
    pytest.skip(f"{what} is missing (install Debian's chromium and the test extras)")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not os.access(CHROMIUM, os.X_OK):
        _missing(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(ready, what: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} did not start in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory) -> Iterator[str]:
    """A JupyterLab server on loopback with a copy of the quickstart notebook; its base URL."""
    base = tmp_path_factory.mktemp("lab")
    root, workspaces, settings = base / "root", base / "workspaces", base / "settings"
    root.mkdir()
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no toast on the page
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
               f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={workspaces}",
               "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = base / "server.log"
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings))
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_200(f"{url}/api/status"), "JupyterLab", server, log)
        yield url
    finally:
        stop(server)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Iterator[str]:
    """``razor-widgets dashboard`` (no model: the default) on a free port; its URL."""
    base = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    log = base / "dashboard.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "razor_widgets", "dashboard", "--port", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=base)
    try:
        # every page load starts a kernel: probe the port, never GET /
        wait_until(lambda: accepts_connections(port), "razor-widgets dashboard", server, log)
        assert f"http://127.0.0.1:{port}/" in log.read_text()  # the command prints its URL
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(server)


def prepared_resnet18() -> ChannelMutator:
    """The engine on the model both pages show: ResNet-18 traced on a 1x3x224x224 input."""
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(torchvision.models.resnet18(), example_inputs=torch.randn(1, 3, 224, 224))
    return mutator


def engine_counts(mutator: ChannelMutator) -> dict:
    """The engine's counts for the current choices: {row label: (now, original)}."""
    res = mutator.resources()
    return {label: (getattr(res, attr), getattr(res, f"original_{attr}")) for label, attr, _ in ROWS}


def shown_counts(text: str) -> dict:
    """The counter table's text parsed: {row label: (now, original)}."""
    counts = {}
    for label, _, _ in ROWS:
        match = re.search(rf"{label}\s+([\d,]+)\s+of\s+([\d,]+)", text)
        assert match, f"no {label} row in the counters: {text!r}"
        counts[label] = (int(match[1].replace(",", "")), int(match[2].replace(",", "")))
    return counts


def move_slider_and_check(page, scope: str, choices: dict) -> None:
    """Focus the handle of the first visible unit slider in ``scope`` and press ArrowLeft
    ``PRESSES`` times: the unit's label must show ``PRESSES`` steps fewer channels and the
    counters what the engine computes for that choice (``choices`` for the other units)."""
    # a unit slider's description carries its tooltip: "<unit name>: <n> channels, <k> layers"
    slider = page.locator(f"{scope} .widget-slider:has(> label.widget-label[title*=' channels, ']):visible").first
    slider.wait_for(timeout=180_000)
    unit_name = slider.locator("label.widget-label").get_attribute("title").split(": ", 1)[0]
    kept = slider.locator("xpath=following-sibling::*[1]")
    counters = page.locator(f"{scope} table:visible").first

    mutator = prepared_resnet18()
    unit = mutator.unit(unit_name)
    full = f"{unit.num_channels}/{unit.num_channels}"
    assert kept.inner_text() == full
    mutator.set_choices(choices)
    assert shown_counts(counters.inner_text()) == engine_counts(mutator)  # the page before the move
    expected_kept = unit.num_channels - PRESSES * unit.repeats  # one key press = one step of the unit
    mutator.set_choices({unit_name: expected_kept / unit.num_channels})
    assert unit.activated_channels == expected_kept
    expected = engine_counts(mutator)
    assert expected["Params"][0] < expected["Params"][1]

    slider.locator(".noUi-handle").focus()
    started = time.monotonic()
    for _ in range(PRESSES):
        page.keyboard.press("ArrowLeft")
    while True:
        shown_kept, text = kept.inner_text(), counters.inner_text()
        if shown_kept == f"{expected_kept}/{unit.num_channels}" and shown_counts(text) == expected:
            break
        if time.monotonic() - started > 30:
            assert shown_kept == f"{expected_kept}/{unit.num_channels}"
            assert shown_counts(text) == expected
        time.sleep(0.05)
    print(f"\n{unit_name}: {PRESSES} x ArrowLeft, {shown_kept} kept, counters right after "
          f"{time.monotonic() - started:.2f} s")


def test_quickstart_in_jupyterlab(browser, jupyterlab) -> None:
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    try:
        page.goto(f"{jupyterlab}/lab/tree/{QUICKSTART.name}?reset")
        page.wait_for_selector(".jp-Notebook:visible", timeout=120_000)
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                               "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=120_000)
        page.evaluate("""async () => {
            const panel = window.jupyterapp.shell.currentWidget;
            await panel.context.ready;
            await panel.sessionContext.ready;
            await window.jupyterapp.commands.execute('notebook:run-all-cells');
        }""")
        page.wait_for_function("[...document.querySelectorAll('.jp-OutputArea-output')]"
                               ".some(e => e.innerText.includes('params') && e.innerText.includes('torch.Size'))",
                               timeout=180_000)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']:visible")
        assert not [e for e in errors.all_inner_texts() if "Error" in e]
        # the notebook set layer1.0.conv1 to 0.5 from code: the page shows it too
        move_slider_and_check(page, ".jp-Notebook", {"layer1.0.conv1_(0, 64)_64": 0.5})
    finally:
        page.close()


def test_dashboard_page(browser, dashboard) -> None:
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    try:
        page.goto(dashboard, timeout=120_000)
        move_slider_and_check(page, "body", {})
    finally:
        page.close()
