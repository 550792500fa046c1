"""The command line: one MODEL syntax and the same flags in every command; arguments checked
before torch is imported or a model is traced (one-line errors, exit status 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from razor_widgets.cli import build_parser, main

TESTS = Path(__file__).resolve().parent


def run_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``razor-widgets ARGS`` in a fresh interpreter; with ``code``, that code runs after main()
    returns or exits (it can look at ``sys.modules``)."""
    script = ("import sys\nfrom razor_widgets.cli import main\n"
              f"try:\n    status = main({list(args)!r})\nexcept SystemExit as exit_:\n    status = exit_.code\n"
              f"{code or ''}\nsys.exit(status)")
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)


def test_demo_lists_units_and_exports(capsys) -> None:
    assert main(["demo", "resnet18", "--input-size", "64", "--ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "resnet18: 14 channel units, 12 prunable" in out
    assert "8 blocks, 5 removable" in out and "block:layer1.1  y = x + f(x), with relu on the stream  removable" in out
    assert "block:layer2.0  y = s(x) + f(x)  must stay: its shortcut is not the identity" in out
    assert "conv1_(0, 3)_3" in out and "fixed: derived from a model input" in out
    assert "exported model matches the masked one: True" in out
    assert "live count = FlopCounterMode count of the exported model: True" in out


def test_demo_takes_any_model_syntax(capsys) -> None:
    assert main(["demo", "helpers:SmallNet", "--input-shape", "1", "3", "16", "16"]) == 0
    out = capsys.readouterr().out
    assert "helpers:SmallNet: 4 channel units, 2 prunable" in out
    assert "exported model matches the masked one: True" in out


def test_the_old_model_option_still_works(capsys) -> None:
    assert main(["demo", "--model", "squeezenet1_0", "--input-size", "64"]) == 0
    captured = capsys.readouterr()
    assert "squeezenet1_0:" in captured.out and "--model is deprecated" in captured.err


@pytest.mark.parametrize("args, message", [
    (["demo", "--ratio", "1.5"], "argument --ratio: must be a number in (0, 1], got 1.5"),
    (["demo", "--ratio", "0"], "argument --ratio: must be a number in (0, 1], got 0"),
    (["demo", "--ratio", "nan"], "argument --ratio: must be a number in (0, 1], got nan"),
    (["demo", "--input-size", "0"], "argument --input-size: must be a positive integer, got 0"),
    (["units", "--input-shape", "0", "3", "224", "224"], "argument --input-shape: must be a positive integer, got 0"),
    (["dashboard", "--input-size", "-3"], "argument --input-size: must be a positive integer, got -3"),
    (["dashboard", "--port", "70000"], "argument --port: must be a port number from 1 to 65535, got 70000"),
    (["dashboard", "--cull-idle", "soon"], "argument --cull-idle: must be a number of seconds, 0 or more, got 'soon'"),
    (["units", "--input-size", "32", "--input-shape", "1", "3", "32", "32"], "not allowed with argument"),
    (["demo", "resnet18", "--model", "resnet34"], "give MODEL once"),
])
def test_bad_arguments_are_one_line_and_exit_2_before_torch_is_imported(args, message) -> None:
    result = run_cli(*args, code="assert 'torch' not in sys.modules, 'torch was imported'")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"razor-widgets {args[0]}: error: ")
    assert message in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["demo", "units", "dashboard"])
def test_every_command_refuses_an_unknown_model_the_same_way(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "resnet_nope"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"razor-widgets {command}: error: 'resnet_nope' is not a torchvision classification, detection, "
        f"segmentation or video model (or give timm:NAME or package.module:callable)\n")


def test_help_answers_without_torch_and_has_no_stray_markup() -> None:
    for args in ([], ["demo"], ["units"], ["dashboard"]):
        result = run_cli(*args, "--help", code="assert 'torch' not in sys.modules, 'torch was imported'")
        assert result.returncode == 0, result.stderr
        assert "usage: razor-widgets" in result.stdout
        assert "``" not in result.stdout
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():  # the same flags in every command
        options = {option for a in action._actions for option in a.option_strings}
        assert {"--input-size", "--input-shape"} <= options
        assert [a.dest for a in action._actions if not a.option_strings] == ["model"]


def test_units_accepts_a_torchvision_name(capsys) -> None:
    assert main(["units", "resnet18", "--choice", "--input-size", "64"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan) == 12 + 5 and plan["layer1.0.conv1_(0, 64)_64"] == 1.0  # 12 units, 5 removable blocks
    assert plan["block:layer1.1"] == "keep"


def test_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "razor_widgets", "--help"],
                            capture_output=True, text=True, check=True)
    assert "demo" in result.stdout and "dashboard" in result.stdout
