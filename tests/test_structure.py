"""The package's shape: layers that follow the data path, imports flowing one way (down), short
functions, and a Trainer that holds only set-up, the step, validation and the loop."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mtrain"

# From the bottom up; a module may import modules of its own layer or of the layers below it.
LAYERS = [
    ("foundation", {"mtrain", "mtrain.errors", "mtrain.special", "mtrain.files", "mtrain.extras", "mtrain.config",
                    "mtrain.config_data", "mtrain.config_checks", "mtrain.config_io", "mtrain.device",
                    "mtrain.launcher", "mtrain.distributed"}),
    ("data", {"mtrain.data"}),
    ("model", {"mtrain.model"}),
    ("run", {"mtrain.run"}),
    ("inference", {"mtrain.inference"}),
    ("evaluation", {"mtrain.evaluation"}),
    ("training", {"mtrain.training"}),
    ("insight", {"mtrain.insight"}),
    ("deploy", {"mtrain.deploy"}),
    ("cli", {"mtrain.cli", "mtrain.__main__"}),
]  # fmt: skip

# Inside the foundation, the order of its modules (config, files and the launcher never import torch).
FOUNDATION = {
    "mtrain": set(),
    "mtrain.errors": set(),
    "mtrain.special": set(),
    "mtrain.files": {"mtrain.errors"},
    "mtrain.extras": {"mtrain.errors"},
    "mtrain.config_data": set(),
    "mtrain.config": {"mtrain.errors", "mtrain.config_data"},
    "mtrain.config_checks": {"mtrain.errors", "mtrain.special", "mtrain.config", "mtrain.config_data"},
    "mtrain.config_io": {"mtrain.errors", "mtrain.files", "mtrain.config", "mtrain.config_checks"},
    "mtrain.device": {"mtrain.errors", "mtrain.config", "mtrain.config_checks"},
    "mtrain.launcher": set(),
    "mtrain.distributed": {"mtrain.launcher"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


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


def layer_of(module: str) -> int:
    for rank, (_, roots) in enumerate(LAYERS):
        if module in roots or any(module.startswith(root + ".") for root in roots if root != "mtrain"):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_structure.py")


def test_every_module_imports_only_its_own_layer_and_those_below():
    upward = []
    for name, path in MODULES.items():
        for dep in imported_modules(path, set(MODULES)) - {name}:
            if layer_of(dep) > layer_of(name):
                upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not upward, upward


def test_foundation_modules_import_only_what_is_below_them():
    for name, allowed in FOUNDATION.items():
        assert imported_modules(MODULES[name], set(MODULES)) <= allowed, name
    assert {m for m in MODULES if layer_of(m) == 0} == set(FOUNDATION)


def test_no_import_cycles_among_mtrain_modules():
    graph = {name: imported_modules(path, set(MODULES)) - {name} for name, path in MODULES.items()}
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


def test_no_function_body_is_longer_than_sixty_lines():
    """Function bodies short enough to read at a glance (docstrings included; a command's option
    list, which is declarations, is not counted), written as the formatter writes them: no
    `fmt: skip` or `fmt: off` packs a body into fewer lines."""
    long, packed = [], []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = lines[node.body[0].lineno - 1 : node.end_lineno]
                if len(body) > 60:
                    long.append(f"{name}.{node.name}: {len(body)} lines")
                if any("fmt: skip" in line or "fmt: off" in line for line in body):
                    packed.append(f"{name}.{node.name}")
    assert not long, long
    assert not packed, packed


def test_no_module_is_longer_than_four_hundred_lines_and_no_command_room_than_three_hundred():
    """One concept a module, readable in one sitting; each command's room (mtrain/cli/) shorter still."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert not {name: n for name, n in sizes.items() if n > 400}
    assert not {name: n for name, n in sizes.items() if name.startswith("mtrain.cli") and n > 300}


def test_the_trainer_holds_set_up_step_validation_and_the_loop_only():
    """The schedule, metrics log, checkpoint files and run session live in their own modules."""
    tree = ast.parse(MODULES["mtrain.training.trainer"].read_text())
    (trainer,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    assert trainer.end_lineno - trainer.lineno + 1 <= 300
    init = next(n for n in trainer.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    created = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets for t in ast.walk(t)
               if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}  # fmt: skip
    assigned_elsewhere = {
        t.attr
        for method in trainer.body
        if isinstance(method, ast.FunctionDef) and method.name != "__init__"
        for n in ast.walk(method)
        if isinstance(n, ast.Assign)
        for target in n.targets
        for t in ast.walk(target)
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }
    assert assigned_elsewhere <= created, f"attributes first created outside __init__: {assigned_elsewhere - created}"


def test_both_engines_implement_the_translation_engine_protocol():
    """Commands, tuning and the server take a TranslationEngine; both engines offer its methods with
    its parameters and its attributes."""
    import inspect

    from mtrain.deploy.ct2_engine import CTranslate2Translator
    from mtrain.inference.engine import TranslationEngine
    from mtrain.inference.translator import Translator

    for engine in (Translator, CTranslate2Translator):
        for method in ("translate_nbest", "translate", "score_tokens"):
            expected = inspect.signature(getattr(TranslationEngine, method)).parameters
            assert inspect.signature(getattr(engine, method)).parameters.keys() == expected.keys(), (engine, method)
        init = inspect.getsource(engine.__init__)
        assert all(f"self.{name}" in init for name in TranslationEngine.__annotations__), engine
