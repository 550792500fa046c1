"""``razor-widgets dashboard`` without a browser: what is checked before a server starts, how
Voilà is configured, and what the page's kernel shows (tests/test_browser_dashboard.py opens
the page in chromium)."""
from __future__ import annotations

import json
import os
import socket
import time

import ipywidgets as widgets
import pytest

from razor_widgets.cli import main
from razor_widgets.dashboard import NOTEBOOK, format_shape, parse_shape
from razor_widgets.dashboard.page import ERROR_CLASS, STATUS_CLASS, about_model, dashboard_page
from razor_widgets.dashboard.server import voila_arguments, voila_command


@pytest.fixture(autouse=True)
def no_server(monkeypatch) -> None:
    """A command that got as far as starting Voilà would replace the test process: fail instead."""
    def execve(*args) -> None:
        raise AssertionError(f"the command started a server: {args[1]}")

    monkeypatch.setattr(os, "execve", execve)


def refused(capsys, *args: str) -> tuple[int | str | None, str]:
    """``razor-widgets dashboard ARGS`` must stop before a server starts: (status, one error line)."""
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", *args])
    status = exit_.value.code
    text = capsys.readouterr().err.strip() if status == 2 else str(status)
    assert text.startswith("razor-widgets dashboard: error: ") and "\n" not in text
    return status, text


def test_bad_models_fail_in_one_line_before_a_server_starts(capsys) -> None:
    assert "'resnet_nope' is not a torchvision" in refused(capsys, "resnet_nope")[1]
    assert "cannot import 'no_such_package.models'" in refused(capsys, "no_such_package.models:net")[1]
    # the example: ViT-B/16 wants 224 x 224 images
    text = refused(capsys, "vit_b_16", "--input-size", "32")[1]
    assert "vit_b_16 cannot run on an input of shape (1, 3, 32, 32): AssertionError: Wrong image height!" in text


def test_a_port_in_use_is_refused_before_the_model_is_built(capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        text = refused(capsys, "resnet_nope_but_checked_first", "--port", str(port))[1]
        assert "'resnet_nope_but_checked_first'" in text  # the model is resolved first (cheap) ...
        text = refused(capsys, "resnet18", "--port", str(port))[1]
        assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in text  # ... then the port


def test_voila_is_configured_for_culling_and_loopback() -> None:
    command = voila_command(9999)
    assert command[1:4] == ["-m", "razor_widgets.dashboard.server", str(NOTEBOOK)]
    arguments = set(voila_arguments(9999, cull_idle=300))
    assert {"--port=9999", "--Voila.ip=127.0.0.1", "--no-browser", "--KernelManager.transport=ipc",
            "--MappingKernelManager.cull_idle_timeout=300", "--MappingKernelManager.cull_interval=60"} <= arguments
    assert "--MappingKernelManager.cull_interval=1" in voila_arguments(9999, cull_idle=3)
    assert not any("cull" in a for a in voila_arguments(9999, cull_idle=0))
    assert "--no-browser" not in voila_arguments(9999, open_browser=True)
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "".join(cells[-1]["source"])
    assert code.rstrip().endswith("dashboard_page()")


def test_shapes_travel_as_text() -> None:
    assert format_shape((1, 3, 16, 112, 112)) == "1x3x16x112x112"
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_page_says_what_it_does_then_shows_the_explorer(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    page = dashboard_page("helpers:SmallNet", (1, 3, 16, 16))
    status = page.children[0]
    assert isinstance(status, widgets.HTML) and STATUS_CLASS in status._dom_classes
    assert ("Building helpers:SmallNet and tracing its channels on a random example, "
            "an input of shape (1, 3, 16, 16)") in status.value
    wait_for(lambda: page.explorer is not None or ERROR_CLASS in status._dom_classes)
    assert page.children[1:] == (page.explorer.widget,)
    assert list(page.explorer.mutator.current_choices) == ["conv0_(0, 8)_8", "conv1_(0, 16)_16"]


def test_the_page_says_which_weights_the_model_has_and_what_its_score_is() -> None:
    """The digits CNN is trained: the page never says "random weights" for it, and says that its
    score is test accuracy; a torchvision model is said to have random weights."""
    assert "random weights" not in NOTEBOOK.read_text()
    digits = about_model("digits")
    assert "trained" in digits and "random" not in digits and "The score is test accuracy" in digits
    assert "random weights" in about_model("resnet18")


def test_an_untraceable_model_shows_the_trace_error_on_the_page(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    page = dashboard_page("helpers:PathDependsOnInput", (1, 3, 16, 16))
    status = page.children[0]
    wait_for(lambda: ERROR_CLASS in status._dom_classes)
    assert page.explorer is None and page.children == (status,)
    assert "Cannot explore helpers:PathDependsOnInput</b> (input 1x3x16x16): TraceError" in status.value
    assert "depends on the input&#x27;s values" in status.value  # the error's own text, escaped
