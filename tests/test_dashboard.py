"""``razor-widgets dashboard``: the model is checked before a server starts, and the Voila
command serves the notebook shipped in the package (tests/test_browser.py opens the page)."""
from __future__ import annotations

import json

import pytest
from torch import nn

from razor_widgets.cli import main
from razor_widgets.dashboard import DEFAULT_MODEL, NOTEBOOK, model_factory, voila_command


def test_unknown_models_fail_in_one_line_before_a_server_starts() -> None:
    with pytest.raises(SystemExit, match="'resnet_nope' is not a torchvision classification model"):
        main(["dashboard", "resnet_nope"])
    with pytest.raises(SystemExit, match="cannot import 'no_such_package.models'"):
        main(["dashboard", "no_such_package.models:net"])


def test_models_by_torchvision_name_or_callable() -> None:
    assert DEFAULT_MODEL == "resnet18"
    model = model_factory("torch.nn:Identity")()
    assert isinstance(model, nn.Identity)
    assert type(model_factory("squeezenet1_0")()).__name__ == "SqueezeNet"


def test_voila_serves_the_packaged_notebook_on_loopback() -> None:
    command = voila_command(9999)
    assert command[1:4] == ["-m", "voila", str(NOTEBOOK)]
    assert {"--port=9999", "--Voila.ip=127.0.0.1", "--no-browser"} <= set(command)
    assert "--no-browser" not in voila_command(9999, open_browser=True)
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "".join(cells[-1]["source"])
    assert "PruningExplorer(" in code and code.rstrip().endswith("explorer")
