"""The package's shape, read off its source with `ast`: the import graph follows the
pipeline's layers without a cycle, no configured name is switched on outside a registry,
and no function is too long to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vaekit"

# The pipeline, bottom first. A module may import its own layer or a lower one, never a
# higher one. Each entry is a module or a package (its modules included).
LAYERS: list[tuple[str, ...]] = [
    ("_version", "_runtime", "errors", "fileio", "randomness", "registry", "feature_weights"),
    ("config",),
    ("device", "distributed"),
    ("data",),
    ("distributions",),
    ("nets",),
    ("priors",),
    ("models",),
    ("objectives", "checkpoint"),
    ("run",),
    ("evaluation",),
    ("training",),
    ("generation", "coding", "anomaly"),  # the three uses: peers that never import each other
    ("cli",),
    # the package's lazy front door, `python -m vaekit`, and the old paths that redirect
    ("__init__", "__main__", "_deprecated", "model", "runs", "tensorboard_log", "uses"),
]
USES = ("generation", "coding", "anomaly")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The vaekit modules `path` imports, at module level or inside functions, outside
    `if TYPE_CHECKING:` blocks. `from vaekit.x import y` counts vaekit.x.y when y is a
    module, else vaekit.x."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "vaekit")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "vaekit":
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    rel = module.split(".")[1:] or ["__init__"]
    for i, layer in enumerate(LAYERS):
        if rel[0] in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_module_imports_a_higher_layer_or_another_use():
    wrong = []
    for module, deps in GRAPH.items():
        for dep in deps:
            if _layer(dep) > _layer(module):
                wrong.append(f"{module} imports {dep}, a higher layer")
            a, b = module.split(".")[1:2], dep.split(".")[1:2]
            if a != b and a and b and a[0] in USES and b[0] in USES:
                wrong.append(f"{module} imports {dep}, another use")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_import_graph_has_no_cycle():
    # Tarjan's strongly connected components; a package imports its parent implicitly,
    # which is no edge here, so a cycle is a real one between modules.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in GRAPH:
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_planted_upward_import_and_cycle(tmp_path):
    """The walk counts a function-local import and skips TYPE_CHECKING ones."""
    p = tmp_path / "m.py"
    p.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from vaekit.cli import main\n"
        "def f():\n    from vaekit.training import train\n"
    )
    assert _imports(p) == {"vaekit.training"}


# ---- no string switches outside the registries -------------------------------------------

# What a comparison with a string literal may stand in, and why it is not a configured name.
EXEMPT_ATTRIBUTES = {
    "suffix": "file suffixes",
    "type": "torch.device.type",
    "mode": "Pillow's image modes",
}
EXEMPT_NAMES = {"__name__": "`__main__` checks"}
# (module, function) -> why its literal comparisons are no switch on a configured name
EXEMPT_FUNCTIONS = {
    ("vaekit.config", "_coerce"): "the words of a boolean or of None on the command line",
    ("vaekit.coding.exact_arithmetic", "_h_gelu"): "torch's own `approximate` argument",
    ("vaekit.coding.exact_arithmetic", "_h_bce_logits"): "torch's own `reduction` argument",
    ("vaekit.coding.containers", "_safe_relative_name"): "path parts that escape a folder",
}


def _literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(map(_literal, node.elts))


def _exempt_operand(node: ast.expr) -> bool:
    while isinstance(node, ast.Call):  # path.suffix.lower()
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    if isinstance(node, ast.Attribute):
        return node.attr in EXEMPT_ATTRIBUTES or _exempt_operand(node.value)
    return isinstance(node, ast.Name) and node.id in EXEMPT_NAMES


def string_switches(module: str, source: str) -> list[str]:
    """Comparisons of a value with a string literal: `x == "name"`, `x != "name"`, and
    `x in ("a", "b")`. A literal key tested for membership (`"key" in row`) is no switch."""
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Compare) and (module, function) not in EXEMPT_FUNCTIONS:
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.Eq | ast.NotEq):
                    pair = [(left, right), (right, left)]
                elif isinstance(op, ast.In | ast.NotIn):
                    pair = [(left, right)]
                else:
                    pair = []
                for value, other in pair:
                    if _literal(other) and not _literal(value) and not _exempt_operand(value):
                        found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
                        break
                left = right
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), None)
    return found


def test_no_configured_name_is_switched_on_outside_a_registry():
    found = [s for m, p in MODULES.items() for s in string_switches(m, p.read_text())]
    assert not found, "compare with a registry's entry instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source, flagged",
    [
        ('if kind == "ratio": pass', True),
        ('if cfg.sampler in ("gmm", "prior"): pass', True),
        ('if "log_px" in terms: pass', False),
        ('if path.suffix == ".npy": pass', False),
        ('if x.device.type == "cuda": pass', False),
        ('if __name__ == "__main__": pass', False),
    ],
)
def test_the_switch_checker_flags_what_it_should(source, flagged):
    assert bool(string_switches("vaekit.example", source)) is flagged


# ---- short functions ---------------------------------------------------------------------

MAX_LINES = 80


def long_functions(paths) -> list[str]:
    """Functions over MAX_LINES lines, decorators excluded."""
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    return out


def test_no_function_in_src_or_benchmarks_is_over_80_lines():
    paths = [*SRC.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    assert not long_functions(paths), long_functions(paths)


# ---- a light front door --------------------------------------------------------------------


@pytest.mark.parametrize("module", ["vaekit", "vaekit.config", "vaekit.cli"])
def test_importing_the_front_door_loads_no_use(module):
    """`vaekit --help`, `import vaekit` and `import vaekit.config` start without the uses'
    libraries (each use's modules load them when it runs)."""
    import subprocess
    import sys

    heavy = ("sklearn", "scipy", "constriction", "matplotlib")
    code = f"import sys, {module}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_public_api_loads_lazily():
    import vaekit

    assert {"train", "evaluate", "AnomalyDetector", "compress", "RunFolder"} <= set(vaekit.__all__)
    assert vaekit.train.__module__ == "vaekit.training.loop"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        vaekit.nonexistent  # noqa: B018


def test_old_import_paths_redirect_with_a_warning():
    import importlib
    import sys

    for old, new in [
        ("vaekit.uses.compression", "vaekit.coding.files"),
        ("vaekit.model", "vaekit.models"),
    ]:
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning) as caught:
            module = importlib.import_module(old)
        assert any(f"{old} moved to {new}" in str(w.message) for w in caught)
        assert module is importlib.import_module(new)
