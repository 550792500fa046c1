"""The tutorial notebooks: stored outputs to compare, and the nbval setup of the one test command
(``python3 -m pytest -q`` runs notebooks/ under nbval, see pyproject.toml) fails on a changed number."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK = "# NBVAL_CHECK_OUTPUT"


def pytest_options() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def text_of(cell: dict) -> str:
    parts = []
    for output in cell["outputs"]:
        parts.append("".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_the_tutorials_are_collected_by_the_test_command() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_channel_mutator.ipynb", "03_config_tool.ipynb", "04_your_own_model.ipynb",
        "05_prune_to_budget.ipynb", "06_mutables_and_mutators.ipynb", "07_sensitivity.ipynb",
        "08_digits_recovery.ipynb", "09_meta_device.ipynb", "10_tiny_llama.ipynb", "11_llm_perplexity.ipynb"]
    options = pytest_options()
    assert "notebooks" in options["testpaths"]
    addopts = shlex.split(options["addopts"])
    assert {"--nbval-lax", "--nbval-current-env"} <= set(addopts)
    assert (ROOT / addopts[addopts.index("--nbval-sanitize-with") + 1]).is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_numbers_are_stored_and_checked(path: Path) -> None:
    """Cells whose numbers must not change carry the marker and their stored output (numbers
    among them); no stored output is an error; cells ran top to bottom."""
    cells = code_cells(path)
    checked = [c for c in cells if "".join(c["source"]).startswith(CHECK)]
    assert len(checked) >= 3, f"{path.name}: too few cells with {CHECK}"
    assert all(text_of(c).strip() for c in checked), f"{path.name}: a checked cell has no stored output"
    assert sum(bool(re.search(r"\d[\d,.]* ", text_of(c))) for c in checked) >= 2, f"{path.name}: few stored numbers"
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: not run top to bottom: {counts}"


def notebook(source: str, stored: str) -> dict:
    cell = {"cell_type": "code", "execution_count": 1, "id": "c0", "metadata": {}, "source": source,
            "outputs": [{"name": "stdout", "output_type": "stream", "text": stored}]}
    return {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.slow  # runs a notebook under nbval in a new pytest (~13 s)
def test_a_changed_engine_number_fails_and_addresses_do_not(tmp_path: Path) -> None:
    """Run nbval with the project's options on three notebooks: a unit count stored wrong fails,
    the right count passes even though a printed memory address differs, and an unmarked cell
    with different output passes (lax)."""
    count = (f"{CHECK}\nimport torch\nfrom torch import nn\nfrom razor_widgets import ChannelMutator\n"
             "mutator = ChannelMutator()\n"
             "mutator.prepare_from_supernet(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3)),\n"
             "                              example_inputs=torch.randn(1, 3, 8, 8))\n"
             "print(len(mutator.mutable_units), 'unit at', hex(id(mutator)))")
    (tmp_path / "right.ipynb").write_text(json.dumps(notebook(count, "1 unit at 0x7f0000000000\n")))
    (tmp_path / "wrong.ipynb").write_text(json.dumps(notebook(count, "2 unit at 0x7f0000000000\n")))
    (tmp_path / "unmarked.ipynb").write_text(json.dumps(notebook("print(41 + 1)", "41\n")))
    addopts = shlex.split(pytest_options()["addopts"])
    where = addopts.index("--nbval-sanitize-with") + 1
    addopts[where] = str(ROOT / addopts[where])
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = " + shlex.join(addopts) + "\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 1, result.stdout[-3000:]
    assert "1 failed, 2 passed" in summary, result.stdout[-3000:]
    assert "FAILED wrong.ipynb" in result.stdout


def test_notebook_items_are_in_the_notebook_and_slow_tiers() -> None:
    """nbval's items have no source to mark: the repository's conftest.py marks them, also when
    pytest is given only a notebook (a conftest in tests/ would not be loaded then)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", "notebook and slow", str(NOTEBOOKS[0])],
                         capture_output=True, text=True, cwd=ROOT, timeout=300).stdout
    assert sum(line.startswith("notebooks/") for line in out.splitlines()) == len(code_cells(NOTEBOOKS[0])), out
