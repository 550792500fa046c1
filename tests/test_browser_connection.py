"""A dashboard page left open keeps its connection, in a real browser (Debian's chromium):
over 90 s (three of the server's 30 s websocket pings) the page opens one kernel websocket
and never loses it, and the server logs no ping timeout.

Slow on purpose (it waits the 90 s); a browser test, so not in the fast tier.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from browser_pages import dashboard_server, new_page

pytestmark = pytest.mark.browser

TESTS = Path(__file__).resolve().parent
OPEN_FOR = 90.0  # seconds: three ping intervals of jupyter_server (30 s)


def test_a_page_left_open_for_90_s_keeps_one_connection(browser, tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    with dashboard_server(tmp_path, "digits", env=env) as dashboard, new_page(browser) as page:
        opened, closed = [], []

        def on_websocket(socket) -> None:
            if "/channels" in socket.url:  # the kernel's connection (not Voilà's other sockets)
                opened.append(socket.url)
                socket.on("close", lambda _: closed.append(time.monotonic()))

        page.on("websocket", on_websocket)
        page.goto(dashboard.url, wait_until="commit")
        page.wait_for_selector(".widget-slider:visible", timeout=180_000)
        started = time.monotonic()
        while time.monotonic() - started < OPEN_FOR:
            page.wait_for_timeout(1000)  # lets playwright deliver the socket events meanwhile
        assert len(opened) == 1, f"the page opened {len(opened)} kernel connections in {OPEN_FOR:.0f} s: {opened}"
        assert closed == [], f"the connection closed {[round(t - started) for t in closed]} s after the page was up"
        assert page.locator(".widget-slider:visible").count() > 0
        log = dashboard.log.read_text()
        for alarming in ("ping timeout", "cannot be longer", "WARNING"):
            assert alarming.lower() not in log.lower(), log[-2000:]
