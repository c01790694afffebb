"""The package's shape (issue 11): imports point down, no import circles, small modules, light import.

Read from the source (every import, including those inside functions), so a circle that Python
tolerates because one side imports late still fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sorter"
# Lower layers never import higher ones; a module may import its own layer (without circles).
LAYERS = {
    "records": 0,
    "boxes": 0,
    "errors": 0,
    "settings": 0,
    "offline": 0,
    "io": 1,
    "models": 2,
    "heads": 3,
    "pipeline": 4,
    "training": 5,
    "video": 5,
    "review": 6,
    "api": 7,
    "cli_common": 8,
    "cli_loop": 8,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out["sorter." + ".".join(parts) if parts != ["__init__"] else "sorter"] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The sorter modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n.startswith("sorter"):
                # the longest known module the name starts with (``from sorter.io import place``)
                while n and n not in modules:
                    n = n.rpartition(".")[0]
                if n:
                    found.add(n)
    return found


def _layer(module: str) -> int:
    if module == "sorter":
        return LAYERS["__init__"]
    return LAYERS[module.split(".")[1]]


def test_every_module_has_a_layer() -> None:
    unknown = [m for m in _modules() if m != "sorter" and m.split(".")[1] not in LAYERS]
    assert not unknown, f"add these to LAYERS: {unknown}"


def test_imports_point_down() -> None:
    modules = _modules()
    upward = []
    for m, path in modules.items():
        for dep in _imports(path, modules) - {m}:
            if dep == "sorter" and m != "sorter":
                # ``from sorter import offline`` names a layer-0 module through the package
                continue
            if _layer(dep) > _layer(m):
                upward.append(f"{m} -> {dep}")
    assert not upward, "imports pointing up:\n" + "\n".join(sorted(upward))


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {m: _imports(p, modules) - {m, "sorter"} for m, p in modules.items() if m != "sorter"}
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                circles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_modules_stay_small(module: str) -> None:
    lines = len(_modules()[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (split it)"


def test_importing_sorter_loads_no_framework() -> None:
    code = (
        "import sys, sorter, sorter.cli, sorter.pipeline.classify, sorter.training.train;"
        "heavy = [m for m in ('torch', 'ultralytics', 'cv2', 'dlib', 'sklearn', 'openvino', 'wandb')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing sorter loaded {out.stdout.strip()}"
