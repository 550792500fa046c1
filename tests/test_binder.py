"""binder/ agrees with the project: its pins satisfy pyproject.toml's ranges, torch is the CPU
build of the version CI pins, and every notebook imports only what Binder installs. No network:
the files are parsed, and imports are mapped to distributions through this environment."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "razor_widgets" / "dashboard" / "dashboard.ipynb"]


def binder_requirements() -> tuple[dict[str, Requirement], list[str]]:
    """The pinned requirements by canonical name, and the option lines."""
    pins, options = {}, []
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        requirement = Requirement(line)
        pins[canonicalize_name(requirement.name)] = requirement
    return pins, options


def pinned_version(requirement: Requirement) -> Version:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement} is not pinned exactly"
    return Version(spec.version)


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_line_is_an_exact_pin_and_torch_comes_from_the_cpu_index() -> None:
    pins, options = binder_requirements()
    assert options == [f"--extra-index-url {CPU_INDEX}"]
    for requirement in pins.values():
        pinned_version(requirement)
    for name in ("torch", "torchvision"):
        assert pinned_version(pins[name]).local == "cpu", f"{name} must be the CPU-only build"


def test_pins_satisfy_the_project_ranges() -> None:
    pins, _ = binder_requirements()
    wanted = [Requirement(r) for r in project()["dependencies"]]
    wanted += [Requirement(r) for r in project()["optional-dependencies"]["notebooks"] if "nbval" not in r]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"binder/requirements.txt lacks {requirement.name} (pyproject: {requirement})"
        version = pinned_version(pins[name])
        assert requirement.specifier.contains(version, prereleases=True), \
            f"binder pins {name}=={version}, outside pyproject's {requirement}"


def test_torch_pins_are_the_ones_ci_and_the_readme_install() -> None:
    pins, _ = binder_requirements()
    for text in ((ROOT / ".ci" / "run").read_text(), (ROOT / "README.md").read_text()):
        for name in ("torch", "torchvision"):
            found = re.findall(rf"\b{name}==([\w.]+)", text)
            assert found and set(found) == {pinned_version(pins[name]).public}


def test_binder_files_run_as_repo2docker_expects() -> None:
    assert (BINDER / "runtime.txt").read_text().strip() == f"python-{sys.version_info.major}.{sys.version_info.minor}"
    lines = [line for line in (BINDER / "postBuild").read_text().splitlines() if line.strip()]
    assert lines[0].startswith("#!") and lines[1] == "set -e"
    assert "pip install --no-deps -e ." in (BINDER / "postBuild").read_text()


def notebook_imports(path: Path) -> set[str]:
    """Top-level modules a notebook imports (shell ``!`` and ``%`` magic lines left out)."""
    names = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("!", "%")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_only_what_binder_installs(path: Path) -> None:
    pins, _ = binder_requirements()
    distributions = importlib.metadata.packages_distributions()
    imports = notebook_imports(path)
    assert "razor_widgets" in imports
    for module in sorted(imports - set(sys.stdlib_module_names) - {"razor_widgets"}):
        providers = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert providers & set(pins), f"{path.name} imports {module!r}, which binder/requirements.txt does not install"


def test_the_import_check_can_fail(tmp_path: Path) -> None:
    notebook = tmp_path / "x.ipynb"
    cell = {"cell_type": "code", "source": ["!ls\n", "import hypothesis.strategies"]}
    notebook.write_text(json.dumps({"cells": [cell]}))
    pins, _ = binder_requirements()
    assert notebook_imports(notebook) == {"hypothesis"}
    assert "hypothesis" not in pins
