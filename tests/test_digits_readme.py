"""The README's accuracy table is the one the digits notebook printed in its stored outputs."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_digits_recovery.ipynb"
SECTION = "## Does it still work?"


def table_lines(text: str) -> list[str]:
    """The first markdown table in ``text``: its consecutive lines starting with '|'."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def stored_table() -> list[str]:
    for cell in json.loads(NOTEBOOK.read_text())["cells"]:
        text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
        if text.startswith("| model |"):
            return table_lines(text)
    raise AssertionError(f"{NOTEBOOK.name} has no stored accuracy table")


def test_the_readme_table_is_the_notebooks() -> None:
    readme = (ROOT / "README.md").read_text()
    assert SECTION in readme
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    notebook = stored_table()
    assert len(notebook) >= 5  # header, rule, the unpruned model and the pruned ones
    assert table_lines(section) == notebook
