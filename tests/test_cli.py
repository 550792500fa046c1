"""The command line's demo: units listed, pruned model exported and checked."""
from __future__ import annotations

import subprocess
import sys

import pytest

from razor_widgets.cli import main


def test_demo_lists_units_and_exports(capsys) -> None:
    assert main(["demo", "--model", "resnet18", "--input-size", "64", "--ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "resnet18: 14 channel units, 12 prunable" in out
    assert "conv1_(0, 3)_3" in out and "fixed: derived from a model input" in out
    assert "exported model matches the masked one: True" in out
    assert "live count = FlopCounterMode count of the exported model: True" in out


def test_unknown_model_is_one_clear_line() -> None:
    with pytest.raises(SystemExit, match="'nope' is not a torchvision classification model"):
        main(["demo", "--model", "nope"])


def test_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "razor_widgets", "--help"],
                            capture_output=True, text=True, check=True)
    assert "demo" in result.stdout
