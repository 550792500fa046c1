"""``razor-widgets units``: reference 001's get_channel_units as a command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torchvision.models import resnet34

from razor_widgets import MODELS, ChannelMutator
from razor_widgets.cli import main
from razor_widgets.export.plans import load_choices

from helpers import SmallNet

SPEC = "helpers:SmallNet"


def run_units(capsys, *args: str) -> dict:
    assert main(["units", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_resnet34_template_rebuilds_the_same_units(capsys, tmp_path) -> None:
    path = tmp_path / "resnet34.json"
    assert main(["units", "torchvision.models:resnet34", "-c", "-i", "-o", str(path),
                 "--input-shape", "1", "3", "64", "64"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"to {path}" in captured.err
    config = json.loads(path.read_text())
    assert config["type"] == "ChannelMutator" and config["parse_cfg"] == {"type": "Config"}
    assert config["channel_unit_cfg"]["units"]["conv1_(0, 3)_3"]["init_args"]["num_channels"] == 3

    model = resnet34()
    mutator = MODELS.build(config)
    mutator.prepare_from_supernet(model)
    assert list(mutator.config_template()["channel_unit_cfg"]["units"]) == list(config["channel_unit_cfg"]["units"])
    prunable = [name for name, cfg in config["channel_unit_cfg"]["units"].items() if "fixed_reasons" not in cfg]
    assert [u.name for u in mutator.mutable_units] == prunable and "layer4.0.conv1_(0, 512)_512" in prunable
    for unit in mutator.units:
        saved = config["channel_unit_cfg"]["units"][unit.name]
        assert unit.config_template(with_init_args=True, with_channels=True)["channels"] == saved["channels"]
        assert unit.is_mutable == ("fixed_reasons" not in saved)
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    x = torch.randn(1, 3, 64, 64)
    assert mutator.to_static(example_inputs=x)(x).shape == (1, 1000)  # the export checked on x


def test_template_flags(capsys) -> None:
    plain = run_units(capsys, SPEC)
    assert plain["parse_cfg"]["demo_input"] == [1, 3, 224, 224]
    unit = plain["channel_unit_cfg"]["units"]["conv0_(0, 8)_8"]
    assert unit == {"choice": 1.0}
    with_init = run_units(capsys, SPEC, "--with-init-args", "--input-shape", "1", "3", "16", "16")
    assert with_init["parse_cfg"]["demo_input"] == [1, 3, 16, 16]
    assert with_init["channel_unit_cfg"]["units"]["conv0_(0, 8)_8"]["init_args"]["num_channels"] == 8
    assert "channels" not in with_init["channel_unit_cfg"]["units"]["conv0_(0, 8)_8"]
    with_channels = run_units(capsys, SPEC, "--with-channel")
    assert with_channels["channel_unit_cfg"]["units"]["conv0_(0, 8)_8"]["channels"]["output_related"] == [
        {"name": "conv0", "start": 0, "end": 8, "expand_ratio": 1, "is_output_channel": True}]
    rebuilt = MODELS.build(plain)  # a plain template traces again
    rebuilt.prepare_from_supernet(SmallNet())
    assert list(rebuilt.current_choices) == ["conv0_(0, 8)_8", "conv1_(0, 16)_16"]


def test_slimmable_template(capsys) -> None:
    config = run_units(capsys, SPEC, "-i", "--mutator-type", "SlimmableChannelMutator",
                       "--unit-type", "SlimmableChannelUnit")
    assert config["type"] == "SlimmableChannelMutator"
    assert config["channel_unit_cfg"]["type"] == "SlimmableChannelUnit"
    assert config["channel_unit_cfg"]["default_args"] == {}
    init_args = config["channel_unit_cfg"]["units"]["conv1_(0, 16)_16"]["init_args"]
    assert init_args["choice_mode"] == "number" and init_args["candidate_choices"] == [16]
    assert config["channel_unit_cfg"]["units"]["conv1_(0, 16)_16"]["choice"] == 16


def test_choice_template_loads_as_an_explorer_plan(capsys, tmp_path) -> None:
    plan = run_units(capsys, SPEC, "--choice", "-c", "-i")  # -c and -i are ignored with --choice
    assert plan == {"conv0_(0, 8)_8": 1.0, "conv1_(0, 16)_16": 1.0}
    path = tmp_path / "plan.json"
    plan["conv1_(0, 16)_16"] = 0.25
    path.write_text(json.dumps(plan))
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(SmallNet())
    load_choices(mutator, path)
    assert mutator.current_choices == plan


def error_of(capsys, *args: str) -> tuple[int | str | None, str]:
    """The exit status and the one error line of ``razor-widgets units ARGS``."""
    with pytest.raises(SystemExit) as exit_:
        main(["units", *args])
    status = exit_.value.code
    text = capsys.readouterr().err if status == 2 else str(status)
    assert text.count("\n") <= 1 and text.startswith("razor-widgets units: error: ")
    return (2 if status == 2 else 1), text


@pytest.mark.parametrize("spec, status, message", [
    ("no_such_package.models:net", 2, "cannot import 'no_such_package.models': ModuleNotFoundError"),
    ("torchvision.models:no_such_model", 2, "'torchvision.models' has no attribute 'no_such_model'"),
    ("resnet_nope", 2, "'resnet_nope' is not a torchvision classification"),
    ("math:pi", 2, "is not callable"),
    ("helpers:Untraceable", 1, "cannot trace helpers:Untraceable with an input of shape "
                               "(1, 3, 224, 224): RuntimeError: this model cannot run"),
    ("json:dumps", 1, "building json:dumps failed: TypeError"),
    ("builtins:dict", 1, "returned a dict, not a torch.nn.Module"),
])
def test_errors_are_one_clear_line(capsys, spec, status, message) -> None:
    shown_status, text = error_of(capsys, spec)
    assert shown_status == status and message in text


def test_unknown_types_are_refused(capsys) -> None:
    assert "'Nope' is not a registered channel mutator type" in error_of(capsys, SPEC, "--mutator-type", "Nope")[1]
    for unit_type in ("Nope", "OneShotMutableOP"):
        status, text = error_of(capsys, SPEC, "--unit-type", unit_type)
        assert status == 2 and f"'{unit_type}' is not a registered channel unit type" in text


def test_console_script_exit_status(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "razor_widgets", "units", "no_such_package:net"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["razor-widgets units: error: cannot import 'no_such_package': "
                                                  "ModuleNotFoundError: No module named 'no_such_package'"]
    help_text = subprocess.run([sys.executable, "-m", "razor_widgets", "units", "-h"],
                               capture_output=True, text=True, check=True).stdout
    for flag in ("-c, --with-channel", "-i, --with-init-args", "--choice", "-o OUTPUT_PATH, --output-path"):
        assert flag in help_text
