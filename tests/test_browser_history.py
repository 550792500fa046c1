"""The plan history as a person uses it in a real browser (Debian's chromium, playwright), in
Voilà and in JupyterLab: two exports make two rows; Restore #1 brings the first plan's counts
back and Undo takes it away again; ticking Compare on both rows shows the differing units with
both plans' counts and colours the graph by the difference. On the same pages: a figure the
package returns shows as an image, the upload button reads "Upload plan" (no count), Export's
message points up at the links, and in JupyterLab the explorer fits the notebook column.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser_pages import (
    click,
    counters,
    free_port,
    jupyterlab_server,
    new_page,
    open_and_run_notebook,
    serve,
    wait_for,
    write_notebook,
)

pytestmark = pytest.mark.browser

CELL = ("import torch\nfrom torch import nn\nfrom razor_widgets import PruningExplorer\n"
        "torch.manual_seed(0)\n"
        "net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3),\n"
        "                    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()\n"
        "explorer = PruningExplorer(net, torch.randn(1, 3, 16, 16))\nexplorer")
# a figure the package returns, as a cell's last line (no pyplot anywhere): it must show as an image
PLOT_CELL = ("from razor_widgets import Sensitivity\n"
             "Sensitivity.from_csv('unit,ratio,kept,num_channels,score\\n,1.0,,,0.9\\n"
             "a,0.5,8,16,0.6\\na,0.25,4,16,0.3\\n').plot()")
PLOT = "img[src^='data:image/png']:visible"
ROW = ".rw-plan-row:visible"
# the explorer's elements whose right edge passes the output column's (JupyterLab clips them);
# what lies inside a box that scrolls or clips (the graph's box, the slider list) does not count
STICKING_OUT = """() => {
    const e = document.querySelector('.rw-explorer'), out = e.closest('.jp-OutputArea-output');
    const limit = out.getBoundingClientRect().right + 1;
    return [...e.querySelectorAll('*')].filter(x => {
        const r = x.getBoundingClientRect();
        if (!r.width || r.right <= limit) return false;
        for (let p = x.parentElement; p && p !== e; p = p.parentElement)
            if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(p).overflowX)) return false;
        return true;
    }).slice(0, 5).map(x => `${x.className} (right edge ${Math.round(x.getBoundingClientRect().right)}, `
                            + `column ${Math.round(limit - 1)})`);
}"""


def export_a_random_plan(page, rows: int) -> dict:
    """Random, then Export: the new row shows up; the counters of that plan."""
    before = counters(page)
    click(page, "Random")
    wait_for(page, lambda: counters(page) != before, "random choices")
    shown = counters(page)
    click(page, "Export & download")
    wait_for(page, lambda: page.locator(ROW).count() == rows, f"history row #{rows}")
    return shown


def restore_undo_and_compare(page) -> None:
    """What a person does with the table, checked against what the page shows."""
    first = export_a_random_plan(page, 1)
    links = page.locator("a.rw-download").first.bounding_box()
    status = page.locator("text=download it with the links above").bounding_box()
    assert links["y"] < status["y"]  # the message points up at the links, which are above it
    second = export_a_random_plan(page, 2)
    assert first != second
    page.locator(f"{ROW} button:has-text('Restore #1')").click()
    wait_for(page, lambda: counters(page) == first, "plan #1's counts restored")
    # the counters and the status line arrive as separate widget updates: wait for the line too
    wait_for(page, lambda: "restored plan #1" in page.inner_text("body"), "the status line 'restored plan #1'")
    click(page, "Undo")  # restoring was one step
    wait_for(page, lambda: counters(page) == second, "plan #2's counts after one Undo")
    fills = page.evaluate("() => [...document.querySelectorAll('.rw-node')].map(n => n.getAttribute('fill'))")
    for number in (1, 2):
        page.locator(f"{ROW}:has-text('Restore #{number}') input[type=checkbox]").check()
    comparison = page.locator(".rw-plan-comparison:visible")
    wait_for(page, lambda: "units keep different channels" in comparison.inner_text()
             or "the same channels" in comparison.inner_text(), "the comparison")
    text = comparison.inner_text()
    assert "A: plan #1" in text and "B: plan #2" in text
    assert f"{first['Params'][0]:,}" in text and f"{second['Params'][0]:,}" in text  # counts side by side
    wait_for(page, lambda: "difference in kept channels" in page.inner_text("body"), "the graph's new legend")
    wait_for(page, lambda: page.evaluate(
        "() => [...document.querySelectorAll('.rw-node')].map(n => n.getAttribute('fill'))") != fills,
        "the graph recoloured by the difference")
    click(page, "Stop comparing")
    wait_for(page, lambda: "difference in kept channels" not in page.inner_text("body"), "the graph back")


def upload_reads_its_label(page) -> None:
    """The upload button shows "Upload plan" and no "(0)": its own text takes no room."""
    shown = page.evaluate("""() => {
        const b = document.querySelector('.rw-upload');
        const range = document.createRange(); range.selectNodeContents(b);
        const text = [...b.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('');
        return {after: getComputedStyle(b, '::after').content, text, width: range.getBoundingClientRect().width,
                button: b.getBoundingClientRect().width};
    }""")
    assert shown["after"] == '"Upload plan"' and "(0)" in shown["text"]  # the count is there, but not seen:
    assert shown["button"] > 60  # the label has room (the ::after text is not part of the range below)
    glyphs = page.evaluate("""() => { const b = document.querySelector('.rw-upload');
        const t = [...b.childNodes].find(n => n.nodeType === 3); const r = document.createRange();
        r.selectNodeContents(t); return r.getBoundingClientRect().width; }""")
    assert glyphs == 0


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory) -> Iterator[str]:
    """Voilà on loopback serving the explorer notebook; its kernels import this checkout."""
    base = tmp_path_factory.mktemp("voila-history")
    notebook = write_notebook(base / "history.ipynb", CELL, PLOT_CELL)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
    with serve(command, base, "voila", port, env=env, cwd=base) as server:
        yield f"{server.url}/"


def test_voila_history_restore_undo_compare(browser, voila_url) -> None:
    with new_page(browser, 1600, 1200, accept_downloads=True) as page:
        page.goto(voila_url, timeout=120_000)
        page.locator("button:has-text('Random')").wait_for(timeout=180_000)
        assert page.locator(f".jp-OutputArea-output {PLOT}").count() == 1  # sens.plot() shows as an image
        upload_reads_its_label(page)
        restore_undo_and_compare(page)


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("lab-history")
    notebook = write_notebook(base / "history.ipynb", CELL, PLOT_CELL)
    with pytest.MonkeyPatch.context() as patch:  # the kernels import this checkout
        patch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        with jupyterlab_server(base, [notebook]) as url:
            yield f"{url}/lab/tree/history.ipynb?reset"


def test_jupyterlab_history_and_the_explorer_fits_the_column(browser, lab_url) -> None:
    with new_page(browser, 960, 1000, accept_downloads=True) as page:  # a narrow window: a narrow column
        open_and_run_notebook(page, lab_url)
        page.locator(".jp-Notebook button:has-text('Random')").wait_for(timeout=180_000)
        page.locator(f".jp-OutputArea-output {PLOT}").wait_for(timeout=120_000)  # sens.plot() as an image
        sticking = page.evaluate(STICKING_OUT)
        assert sticking == [], f"parts of the explorer stick out of the notebook column: {sticking}"
        upload_reads_its_label(page)
        restore_undo_and_compare(page)
