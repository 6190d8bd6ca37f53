"""The layering docs/architecture.md states, checked on the source: the model code imports nothing above it,
eval, bench and train import none of each other, module-level imports have no cycles, and no file outgrows
what one person can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import effsam2

PACKAGE = Path(effsam2.__file__).parent
# what docs/architecture.md lets the model code import (an allow-list: anything else is above it)
MODELING_MAY_IMPORT = ("effsam2.modeling", "effsam2.configs", "effsam2.preprocess", "effsam2.timing",
                       "effsam2.errors")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """effsam2 modules imported by a file (all of them, or only those imported at module level);
    ``from effsam2.pkg import mod`` counts as importing ``effsam2.pkg.mod`` when that is a module."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("effsam2"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                found.add(sub if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("effsam2"))
    return found


def sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the package was found
    return files


def test_modeling_imports_nothing_above_it():
    def allowed(module: str) -> bool:
        return any(module == a or module.startswith(a + ".") for a in MODELING_MAY_IMPORT)

    offending = {module_name(f): sorted(m for m in imports(f, top_level_only=False) if not allowed(m))
                 for f in sources() if module_name(f).startswith("effsam2.modeling")}
    assert not {k: v for k, v in offending.items() if v}


def test_no_library_module_imports_the_command_line():
    offending = {module_name(f): sorted(m for m in imports(f, top_level_only=False) if m.startswith("effsam2.cli"))
                 for f in sources() if not module_name(f).startswith("effsam2.cli")}
    assert not {k: v for k, v in offending.items() if v}


def test_eval_bench_and_train_import_none_of_each_other():
    """docs/architecture.md puts the three side by side: what two of them share (the dataset readers, the
    tracker) lives below them, and the eval run takes adaptation as a callable instead of importing train."""
    siblings = ("effsam2.eval", "effsam2.bench", "effsam2.train")

    def part(module: str) -> str | None:
        return next((s for s in siblings if module == s or module.startswith(s + ".")), None)

    offending = {}
    for f in sources():
        own = part(module_name(f))
        if own is not None:
            crossing = sorted(m for m in imports(f, top_level_only=False) if part(m) not in (None, own))
            if crossing:
                offending[module_name(f)] = crossing
    assert not offending


def test_module_level_imports_have_no_cycles():
    graph = {module_name(f): imports(f, top_level_only=True) for f in sources()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if dep not in graph:
                continue
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, node, dep])}"
            if state.get(dep) is None:
                visit(dep, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_no_source_file_over_400_lines():
    long = {module_name(f): n for f in sources() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long
