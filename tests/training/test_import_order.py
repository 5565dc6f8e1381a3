"""``training/`` imports in one direction: no module reaches itself through imports, deferred ones included.

The circle this guards against (engine <-> deepspeed_engine, schedule -> checkpoint -> engine) held only
because two imports sat inside functions or under TYPE_CHECKING; a static walk counts those too, so moving
either to the top level could not bring it back unnoticed. The fresh-interpreter test imports each former
member of the circle first, in its own interpreter, so an order-dependent import would fail there.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "training"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """First-party ``training`` modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING).
    ``from training.x import y`` counts ``training.x`` and, when ``y`` is a module, ``training.x.y``.
    The implicit import of a module's own parent packages is not an edge (Python runs it first, always)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_deferred_imports():
    graph = import_graph()
    # build_engine imports the DeepSpeed backend inside the function: the walk must still see the edge.
    assert "training.deepspeed_engine" in graph["training.builder"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_training_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in training/: " + " -> ".join(cycle)


def test_the_layers_of_the_former_circle():
    graph = import_graph()
    assert graph["training.schedule"] == set(), "the LR schedule is pure: no checkpoint I/O, no engine"
    assert "training.engine" not in graph["training.checkpoint"], "checkpoint code types against a Protocol"
    for backend in ("training.torch_engine", "training.deepspeed_engine"):
        assert "training.builder" not in graph[backend]
    assert not {"training.builder", "training.torch_engine", "training.deepspeed_engine"} & graph["training.engine"]


@pytest.mark.parametrize(
    "module",
    ["training.schedule", "training.checkpoint", "training.engine", "training.deepspeed_engine", "training.merge"],
)
def test_each_former_member_imports_first_in_a_fresh_interpreter(module):
    code = f"import importlib; importlib.import_module({module!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
