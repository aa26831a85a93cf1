"""The package's shape: imports flow one way (cli -> commands -> model/data/config -> utilities)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mtrain"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every mtrain module that `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def test_no_import_cycles_among_mtrain_modules():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}
    graph = {
        name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()
    }  # a package's own __init__

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    return trail + [start]
                if dep not in trail:
                    stack.append((dep, trail + [dep]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_low_level_modules_import_nothing_above_them():
    low = {
        "mtrain.errors": set(),
        "mtrain.special": set(),
        "mtrain.device": {"mtrain.errors", "mtrain.config"},
        "mtrain.config": {"mtrain.errors", "mtrain.files"},
        "mtrain.files": {"mtrain.errors"},
    }
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name, allowed in low.items():
        assert imported_modules(paths[name], set(paths)) <= allowed, name


def test_no_function_is_longer_than_sixty_lines():
    """Functions short enough to read at a glance (docstrings included)."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
