"""The house rules that a reviewer would otherwise check by hand: small files and functions,
layer types named only in ``layers/`` (and ``models/``), an engine that imports no UI
library, stages that import only the stages below them, and no import cycles inside the
package (imports inside functions count; ``TYPE_CHECKING`` imports do not); and in tests/, no test
file imports another (shared code is in tests/helpers.py)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "razor_widgets"
TESTS = Path(__file__).resolve().parent
# a test module named in a string: code for a subprocess (``from test_x import ...``) or a MODEL
# spec ``test_x:Name``, which the command line and the dashboard's kernel import
TEST_MODULE_IN_TEXT = re.compile(r"(?m)^\s*(?:from|import)\s+(test_\w+)|\b(test_\w+):[A-Za-z_]")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80
# matplotlib is a plotting library, not UI: the engine may draw a figure when asked (loaded lazily)
UI_LIBRARIES = ("ipywidgets", "IPython", "voila", "ipympl")
UI_MODULES = ("widgets", "dashboard", "cli", "__main__")  # the UI and the command line; the rest is the engine
# the pipeline's stages, bottom up (docs/architecture.md): a module imports only from its own stage
# and the stages below it; the facade (``razor_widgets`` itself, which loads lazily) from anywhere
STAGES = [
    ["registry"],
    ["trace"],
    ["channels"],
    ["mutables"],
    ["layers"],
    ["analysis"],
    ["counting"],
    ["export"],
    ["mutators"],
    ["importance", "budget", "quality", "algorithms"],
    ["models", "model_loading"],
    ["pruning_session"],
    ["widgets", "dashboard"],
    ["cli", "__main__", "exports"],
]
STAGE_OF = {part: rank for rank, parts in enumerate(STAGES) for part in parts}
LAYER_TYPE = re.compile(r"\bnn\.(Conv\w*|_ConvNd|BatchNorm\w*|_BatchNorm|InstanceNorm\w*|Linear|LayerNorm|GroupNorm"
                        r"|Embedding|MultiheadAttention)\b")


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    """``{dotted module name: (path, parsed tree)}`` of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = (path, ast.parse(path.read_text()))
    return out


SOURCES = _sources()


def _is_engine(name: str) -> bool:
    return not any(name == f"razor_widgets.{p}" or name.startswith(f"razor_widgets.{p}.") for p in UI_MODULES)


def _imports(name: str, path: Path, tree: ast.Module) -> list[str]:
    """Every module the code imports (inside functions too), less the facade's lazy ``__getattr__``
    and ``TYPE_CHECKING`` blocks, as absolute names."""
    skipped = set()
    for node in tree.body:
        if name == "razor_widgets" and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            skipped |= {id(n) for n in ast.walk(node)}
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skipped |= {id(n) for n in ast.walk(node)}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *([base] if base else [])])
            found += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base for alias in node.names]
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in SOURCES}
    for name, (path, tree) in SOURCES.items():
        for target in _imports(name, path, tree):
            while target and target not in SOURCES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in SOURCES and target != name:
                edges[name].add(target)
    return edges


def test_no_file_or_function_is_too_long():
    too_long = []
    for name, (path, tree) in SOURCES.items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long


def test_layer_types_are_named_only_in_layers_and_models():
    named = []
    for name, (path, _) in SOURCES.items():
        if name.startswith(("razor_widgets.layers", "razor_widgets.models")):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LAYER_TYPE.search(line.split("#")[0]):
                named.append(f"{name}:{number}: {line.strip()}")
    assert not named


def test_the_engine_imports_no_ui_library():
    ui_imports = [f"{name} imports {target}" for name, (path, tree) in SOURCES.items() if _is_engine(name)
                  for target in _imports(name, path, tree)
                  if target.split(".")[0] in UI_LIBRARIES or not _is_engine(target) and target in SOURCES]
    assert not ui_imports


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycles():
    # a package's __init__ imports its submodules: edges into a parent package from inside it are
    # the package's own structure, not a cycle between concepts
    edges = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in _edges().items()}
    assert not _cycles(edges)


def _stage(name: str) -> str:
    """``razor_widgets.analysis.rules`` -> ``analysis``."""
    return name.split(".")[1]


def test_every_module_belongs_to_a_stage():
    assert not [name for name in SOURCES if name != "razor_widgets" and _stage(name) not in STAGE_OF]


def test_stages_import_only_the_stages_below_them():
    upward = [f"{name} imports {target}" for name, targets in _edges().items() if name != "razor_widgets"
              for target in targets if target != "razor_widgets"
              and STAGE_OF[_stage(target)] > STAGE_OF[_stage(name)]]
    assert not upward


def test_no_import_cycles_between_stages():
    """Stages of the same rank (importance, budget, quality, algorithms) may import each other
    one way only."""
    edges: dict[str, set[str]] = {}
    for name, targets in _edges().items():
        if name != "razor_widgets":
            edges.setdefault(_stage(name), set()).update(
                _stage(t) for t in targets if t != "razor_widgets" and _stage(t) != _stage(name))
    assert not _cycles(edges)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert _cycles(edges) == expected


def test_a_submodule_imported_alone_still_builds_every_registered_type():
    """The facade loads on first use; a registry miss loads the package's registrations."""
    code = ("from razor_widgets.registry import MODELS\n"
            "assert type(MODELS.build({'type': 'SearchableShuffleNetV2'})).__name__ == 'SearchableShuffleNetV2'\n"
            "assert 'TaylorMutableChannelUnit' in MODELS\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


MAX_MODULE_DOCSTRING_LINES = 10


def _documented(node: ast.AST) -> bool:
    return ast.get_docstring(node) is not None


def _is_accessor(node: ast.AST) -> bool:
    """A property's setter or deleter: documented by its getter."""
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in node.decorator_list)


def _public_definitions(tree: ast.Module):
    """``(qualified name, node)`` of every public module-level function and class, and every public
    method (properties included) of a public class."""
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        yield node.name, node
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if (isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and not member.name.startswith("_")
                        and not _is_accessor(member)):
                    yield f"{node.name}.{member.name}", member


def test_public_definitions_have_docstrings():
    missing = [f"{name}.{qualified} ({path.relative_to(PACKAGE.parent)}:{node.lineno})"
               for name, (path, tree) in SOURCES.items()
               for qualified, node in _public_definitions(tree) if not _documented(node)]
    assert not missing, f"{len(missing)} public definitions without a docstring:\n" + "\n".join(missing)


def test_module_docstrings_are_short():
    """Longer policy text belongs in docs/, with the module pointing at it."""
    too_long = [f"{name}: {len(doc.splitlines())} lines" for name, (_, tree) in SOURCES.items()
                if (doc := ast.get_docstring(tree)) and len(doc.splitlines()) > MAX_MODULE_DOCSTRING_LINES]
    assert not too_long, (f"module docstrings over {MAX_MODULE_DOCSTRING_LINES} lines (move the policy to docs/):\n"
                          + "\n".join(too_long))


def _test_modules_imported_by(path: Path, tests: Path = TESTS) -> set[str]:
    """The test modules (``tests/test_*.py``) that ``path`` imports: import statements, inside
    functions too, and test modules named in strings (``TEST_MODULE_IN_TEXT``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= {a or b for a, b in TEST_MODULE_IN_TEXT.findall(node.value)}
    return {name for name in found if name.startswith("test_") and (tests / f"{name}.py").is_file()}


def test_no_test_file_imports_a_test_file():
    """What tests share lives in tests/helpers.py (the browser page driver in browser_pages.py),
    never in a test file: importing one runs its module again and ties the files together.
    conftest.py and the helper modules import no test file either."""
    imports = {path.name: sorted(_test_modules_imported_by(path)) for path in sorted(TESTS.glob("*.py"))}
    assert not {name: found for name, found in imports.items() if found}


def test_the_test_import_check_finds_every_form(tmp_path):
    for name in ("test_a", "test_b", "test_c", "test_d", "test_e", "helpers"):
        (tmp_path / f"{name}.py").write_text("")
    path = tmp_path / "test_example.py"
    path.write_text("import test_a\n"
                    "def f():\n"
                    "    from test_b import CASES\n"
                    "SPEC = 'test_c:SmallNet'\n"
                    "SCRIPT = \"\"\"\n    from test_d import Small\n\"\"\"\n"
                    "import helpers, test_missing\n"
                    "NOTE = 'see test_e.py and tests/test_e.py: not an import'\n")
    assert _test_modules_imported_by(path, tmp_path) == {"test_a", "test_b", "test_c", "test_d"}
