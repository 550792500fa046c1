"""What every real-browser test needs (the recipe of the shared docs/browser-testing.md):
servers started on loopback and stopped by their own process, notebooks opened and run in
JupyterLab, sliders moved with the keyboard and the page's text read and waited for.

The ``browser`` fixture (Debian's chromium driven by playwright) lives in tests/conftest.py:
locally it skips when chromium or playwright is missing; with CI set that fails the test.
A new browser test imports what it needs from here, e.g.::

    from browser_pages import jupyterlab_server, open_and_run_notebook, wait_for, write_notebook
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat
import pytest
import torch
import torchvision

from razor_widgets import ChannelMutator
from razor_widgets.widgets.counters import ROWS

CHROMIUM = os.environ.get("RAZOR_WIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# a unit slider's description carries its tooltip: "<unit name>: <n> channels, <k> layers"
UNIT_SLIDER = ".widget-slider:has(> label.widget-label[title*=' channels, ']):visible"


# -- the browser ---------------------------------------------------------------------------------
def missing(what: str) -> None:
    """Skip the test for a missing browser part, or fail it under CI (``.ci/run`` installs both)."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: CI must run the browser test (.ci/run installs it)")
    pytest.skip(f"{what} is missing (install Debian's chromium and the test extras)")


@contextmanager
def launched_chromium() -> Iterator:
    """Debian's chromium launched headless by playwright (never playwright's own browser)."""
    if not os.access(CHROMIUM, os.X_OK):
        missing(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def new_page(browser, width: int = 1600, height: int = 1200, **options) -> Iterator:
    """A page of ``width`` x ``height`` (playwright ``new_page`` options besides), closed at the end."""
    page = browser.new_page(viewport={"width": width, "height": height}, **options)
    try:
        yield page
    finally:
        page.close()


# -- servers -------------------------------------------------------------------------------------
@dataclass
class Server:
    """A server process started by a test: its process, the URL it answers on and its log."""

    process: subprocess.Popen
    url: str
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Terminate ``process``; kill it if it hangs."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen, log: Path,
               timeout: float = 120.0) -> None:
    """Wait until ``ready()``; fail with the log's tail when ``process`` exits or time runs out."""
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


@contextmanager
def serve(command: list[str], base: Path, what: str, port: int, probe: str | None = None,
          env: dict | None = None, cwd: Path | None = None) -> Iterator[Server]:
    """Run ``command`` (serving on ``port``, logging to ``base``) until it answers, then yield it;
    stop it at the end. Readiness: ``GET probe`` answers 200, or without ``probe`` the port
    accepts connections (Voilà starts a kernel for every ``GET /``: never probe that)."""
    url = f"http://127.0.0.1:{port}"
    log = base / f"{what.replace(' ', '-')}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        ready = (lambda: answers_200(f"{url}{probe}")) if probe else (lambda: accepts_connections(port))
        wait_until(ready, what, process, log)
        yield Server(process, url, log)
    finally:
        stop(process)


@contextmanager
def jupyterlab_server(base: Path, notebooks: Iterable[Path]) -> Iterator[str]:
    """JupyterLab on loopback serving copies of ``notebooks`` (so a test never writes into the
    repo), with a fresh workspace and no news toast; its base URL."""
    root, workspaces, settings = base / "root", base / "workspaces", base / "settings"
    root.mkdir()
    for notebook in notebooks:
        shutil.copy(notebook, root / notebook.name)
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no toast on the page
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
               f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={workspaces}",
               "--LabApp.expose_app_in_browser=True"] + (["--allow-root"] if os.geteuid() == 0 else [])
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings))
    with serve(command, base, "JupyterLab", port, probe="/api/status", env=env) as server:
        yield server.url


@contextmanager
def voila_server(base: Path, notebook: Path) -> Iterator[str]:
    """Voilà serving ``notebook`` on loopback; the page's URL."""
    port = free_port()
    command = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
    with serve(command, base, "voila", port, cwd=base) as server:
        yield f"{server.url}/"


@contextmanager
def dashboard_server(base: Path, *args: str, env: dict | None = None) -> Iterator[Server]:
    """``razor-widgets dashboard ARGS`` on a free port; checks that it prints its URL."""
    port = free_port()
    command = [sys.executable, "-m", "razor_widgets", "dashboard", *args, "--port", str(port)]
    with serve(command, base, "razor-widgets dashboard", port, env=env, cwd=base) as server:
        page = replace(server, url=f"{server.url}/")
        assert page.url in page.log.read_text()  # the command prints its URL
        yield page


def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook of one code cell per source, for the Python 3 kernel."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def open_and_run_notebook(page, url: str) -> None:
    """Open a notebook's JupyterLab ``url`` and run all its cells once its kernel is ready."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook:visible", timeout=120_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=120_000)
    page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.context.ready;
        await panel.sessionContext.ready;
        await window.jupyterapp.commands.execute('notebook:run-all-cells');
    }""")


# -- the dashboard's kernels and page loads -------------------------------------------------------
SLIDER = ".widget-slider:visible"
# records, from the first moment of each page, when the status line and the first slider appear
WATCH_PAGE = """
window.__seen = {};
new MutationObserver(() => {
    const now = performance.now();
    if (!window.__seen.status && document.querySelector('.razor-dashboard-status')) window.__seen.status = now;
    if (!window.__seen.slider && document.querySelector('.widget-slider')) window.__seen.slider = now;
}).observe(document, {childList: true, subtree: true, attributes: true});
"""


def kernels(dashboard: Server) -> int:
    """How many kernels the server runs now: its ``ipykernel_launcher`` children (from /proc)."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            count += parent == dashboard.process.pid and b"ipykernel_launcher" in (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):  # a process that ended meanwhile
            pass
    return count


def wait_for_kernels(dashboard: Server, expected: int, timeout: float) -> float:
    """Wait until ``expected`` kernels run; the seconds it took."""
    started = time.monotonic()
    while kernels(dashboard) != expected:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{kernels(dashboard)} kernels after {timeout:.0f} s, expected {expected}:\n"
                                 f"{dashboard.log.read_text()[-3000:]}")
        time.sleep(0.25)
    return time.monotonic() - started


# -- reading and waiting for the page ------------------------------------------------------------
def wait_for(page, check: Callable, what: str, timeout: float = 30.0):
    """Wait until ``check()`` is true (an AssertionError counts as false); its result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {what} in {timeout:.0f} s")
        page.wait_for_timeout(50)


def wait_text(locator, predicate: Callable[[str], bool], what: str, timeout: float = 120.0) -> str:
    """Wait until ``locator``'s text satisfies ``predicate``; the text (the last one in the error)."""
    deadline = time.monotonic() + timeout
    while True:
        text = locator.inner_text()
        if predicate(text):
            return text
        assert time.monotonic() < deadline, f"{what}: the page shows {text!r}"
        time.sleep(0.1)


def click(page, text: str) -> None:
    """Click the first visible button that says ``text``."""
    page.locator(f"button:has-text('{text}'):visible").first.click()


def press(page, handle, key: str, times: int = 1) -> None:
    """Focus a slider's ``handle`` and press ``key`` (ArrowLeft: one step down) ``times`` times."""
    handle.focus()
    for _ in range(times):
        page.keyboard.press(key)


def download(page, name_part: str) -> bytes:
    """Click the explorer's download link whose text has ``name_part``; the file's bytes."""
    with page.expect_download(timeout=60_000) as info:
        page.locator(f"a.rw-download:has-text('{name_part}')").click()
    return Path(info.value.path()).read_bytes()


def upload_plan(page, path: Path) -> None:
    """Click "Upload plan" and choose ``path`` in the file chooser."""
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload:visible, button:has-text('Upload plan'):visible").first.click()
    chooser.value.set_files(str(path))


def shown_counts(text: str) -> dict:
    """The counter table's text parsed: {row label: (now, original)}."""
    counts = {}
    for label, _, _ in ROWS:
        match = re.search(rf"{label}\s+([\d,]+)\s+of\s+([\d,]+)", text)
        assert match, f"no {label} row in the counters: {text!r}"
        counts[label] = (int(match[1].replace(",", "")), int(match[2].replace(",", "")))
    return counts


def counters(page, scope: str = "") -> dict:
    """The counts the first visible counter table (in ``scope``) shows: {row label: (now, original)}."""
    return shown_counts(page.locator(f"{scope} table:visible".strip()).first.inner_text())


# -- what the engine says ------------------------------------------------------------------------
def prepared_resnet18() -> ChannelMutator:
    """The engine on the model the ResNet-18 pages show, traced on a 1x3x224x224 input."""
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(torchvision.models.resnet18(), example_inputs=torch.randn(1, 3, 224, 224))
    return mutator


def engine_counts(mutator: ChannelMutator) -> dict:
    """The engine's counts for the current choices: {row label: (now, original)}."""
    res = mutator.resources()
    return {label: (getattr(res, attr), getattr(res, f"original_{attr}")) for label, attr, _ in ROWS}
