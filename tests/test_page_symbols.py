"""Every symbol the explorer and the dashboard put on a page has a glyph in the fonts of the
machine (Debian's chromium draws a missing one as an empty box): the non-ASCII characters and
HTML character references in the string literals of razor_widgets/widgets and /dashboard.
Asked of fontconfig (``fc-list :charset=HEX``), which is what chromium uses on Linux."""
from __future__ import annotations

import ast
import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "razor_widgets"
REFERENCE = re.compile(r"&#(x[0-9a-fA-F]+|\d+);")


def page_symbols() -> dict[str, str]:
    """``{character: where it is}`` for every non-ASCII character in the UI's string literals
    (docstrings left out: they never reach a page)."""
    found = {}
    for path in sorted([*PACKAGE.joinpath("widgets").glob("*.py"), *PACKAGE.joinpath("dashboard").glob("*.py")]):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = REFERENCE.sub(lambda m: html.unescape(m[0]), node.value)
                for char in text:
                    if ord(char) > 127:
                        found.setdefault(char, f"{path.name}:{node.lineno}")
    return found


def test_every_symbol_on_the_page_has_a_glyph() -> None:
    if shutil.which("fc-list") is None:
        pytest.skip("no fontconfig (fc-list) on this machine")
    symbols = page_symbols()
    assert "·" in symbols  # the scan sees the symbols the widgets use
    missing = [f"U+{ord(c):04X} {c!r} ({where})" for c, where in symbols.items()
               if not subprocess.run(["fc-list", f":charset={ord(c):x}", "family"], capture_output=True,
                                     text=True).stdout.strip()]
    assert not missing, f"no font on this machine draws: {', '.join(missing)}"
