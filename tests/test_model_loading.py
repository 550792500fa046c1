"""MODEL as every command reads it: torchvision names of every family, timm:NAME,
package.module:callable and the table of named models; nothing is downloaded."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from torch import nn

from razor_widgets import model_loading
from razor_widgets.model_loading import NAMED_MODELS, ModelLoadError, load_model, register_model, resolve_model

PACKAGE = Path(model_loading.__file__).resolve().parent


def test_torchvision_names_of_every_family_build_with_random_weights() -> None:
    assert resolve_model("resnet18").input_shape == (1, 3, 224, 224)
    assert resolve_model("inception_v3").input_shape == (1, 3, 299, 299)  # the model's own input size
    video = resolve_model("r3d_18")
    assert video.input_shape == (1, 3, 16, 112, 112) and video.with_input_size(64) == (1, 3, 16, 64, 64)
    segmentation = load_model("lraspp_mobilenet_v3_large")  # weights_backbone=None: nothing to download
    assert type(segmentation).__name__ == "LRASPP" and not segmentation.training


def test_timm_and_callables() -> None:
    pytest.importorskip("timm")
    assert type(load_model("timm:resnet10t")).__name__ == "ResNet"
    assert isinstance(load_model("torch.nn:Identity"), nn.Identity)
    with pytest.raises(ModelLoadError, match="'nope' is not a timm model"):
        resolve_model("timm:nope")


def test_named_models_are_a_table(monkeypatch) -> None:
    monkeypatch.setitem(NAMED_MODELS, "tiny", NAMED_MODELS["digits"])  # keeps the table as it was afterwards
    register_model("tiny", "helpers:SmallNet", (1, 3, 16, 16), "two units")
    source = resolve_model("tiny")
    assert source.kind == "named" and source.input_shape == (1, 3, 16, 16)
    assert type(source.load()).__name__ == "SmallNet"
    monkeypatch.setitem(NAMED_MODELS, "gone", model_loading.NamedModel("no_such_package.models:net", (1, 1), ""))
    with pytest.raises(ModelLoadError, match=r"the named model 'gone' \(no_such_package.models:net\) is not available"):
        resolve_model("gone")
    with pytest.raises(ValueError, match="no ':'"):
        register_model("a:b", "x:y", (1,))


def test_digits_resolves_when_its_callable_exists() -> None:
    target = NAMED_MODELS["digits"].target
    module, _, attr = target.partition(":")
    try:
        exists = hasattr(__import__(module, fromlist=[attr]), attr)
    except ImportError:
        exists = False
    if exists:
        assert resolve_model("digits").kind == "named"
    else:
        with pytest.raises(ModelLoadError, match="is not available"):
            resolve_model("digits")


@pytest.mark.parametrize("spec, message", [
    ("resnet_nope", "'resnet_nope' is not a torchvision classification, detection, segmentation or video model"),
    (":net", "MODEL must be a torchvision model name, timm:NAME, hf:MODEL_TYPE, hf:PATH or package.module:callable"),
    ("no_such_package.models:net", "cannot import 'no_such_package.models': ModuleNotFoundError"),
    ("builtins:dict", None),
])
def test_errors_are_one_line(spec, message) -> None:
    if message is None:
        with pytest.raises(ModelLoadError, match="returned a dict, not a torch.nn.Module"):
            resolve_model(spec).load()
        return
    with pytest.raises(ModelLoadError) as error:
        resolve_model(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def imports_of(path: Path) -> set[str]:
    """The package modules ``path`` imports, in functions too (relative imports resolved)."""
    found = set()
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            found.add(".".join(p for p in (base, node.module or "") if p))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("razor_widgets")}


def test_no_import_cycle_between_the_command_line_and_the_dashboard() -> None:
    dashboard = {p for p in (PACKAGE / "dashboard").glob("*.py")}
    assert not any(name.startswith("razor_widgets.cli") for path in dashboard for name in imports_of(path))
    assert not any(name.startswith(("razor_widgets.cli", "razor_widgets.dashboard"))
                   for name in imports_of(PACKAGE / "model_loading.py"))
