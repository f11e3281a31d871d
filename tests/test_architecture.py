"""The shape of the code: the core never imports a plugin, no import cycles, modules small enough
to read in one sitting. What README's "How it is built" describes, held here."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT, heavy_imports

PACKAGES = {"rnnexport": ROOT / "rnnexport", "rnnexport_converters": ROOT / "converters"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path, name: str, module_level_only: bool) -> set[str]:
    """What `path` imports: `from package import module` counts as the module alone, `from module
    import name` as the module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            found |= submodules or {base}
    return found


def test_the_core_never_imports_a_plugin():
    for name, path in MODULES.items():
        if name.startswith("rnnexport."):
            plugins = sorted(m for m in _imports(path, name, False) if m.split(".")[0] in ("rnnexport_converters",
                                                                                           "converters"))
            assert not plugins, f"{path.relative_to(ROOT)} imports {plugins}"


def test_no_import_cycle():
    graph = {name: sorted(m for m in _imports(path, name, True) if m in MODULES and m != name)
             for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in graph[name]:
            if state.get(other) == "open":
                cycle = trail[trail.index(other):] + [other] if other in trail else [name, other]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if other not in state:
                visit(other, [*trail, other])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_modules_stay_small():
    long = {str(path.relative_to(ROOT)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_runtimes_load_without_the_converters():
    """Validating an export needs its runtime (and numpy), never tf2onnx; the ONNX runtime needs no TensorFlow."""
    code = (
        "import sys\n"
        "sys.modules['tf2onnx'] = None\n"
        "import rnnexport_converters.onnx.target, rnnexport_converters.onnx.runtime\n"
        "import rnnexport_converters.tflite.target, rnnexport_converters.savedmodel.target\n"
    )
    assert [m for m in heavy_imports(code) if m not in ("onnxruntime", "numpy")] == []
