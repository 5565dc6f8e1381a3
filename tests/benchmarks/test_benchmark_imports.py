"""Every name a benchmark script imports exists. The scripts import lazily inside ``main`` (heavy modules load
only when run) and need stage outputs or a GPU to run, so a renamed helper would otherwise surface only when
someone runs ``make bench`` (``rl_levels`` once imported a helper that a refactor had removed)."""

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted(p for p in (Path(__file__).parents[2] / "benchmarks").glob("*.py") if p.name != "__init__.py")
FIRST_PARTY = ("benchmarks", "configs", "data_contracts", "environments", "evals", "inference", "kernels", "lineage",
               "model", "tasks", "training", "workflows")  # fmt: skip


def first_party_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from module import name`` of this project's code in the file, at any depth."""
    pairs = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in FIRST_PARTY:
            pairs += [(node.module, alias.name) for alias in node.names]
    return pairs


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_first_party_name_a_benchmark_imports_exists(script):
    pairs = first_party_imports(script)
    missing = []
    for module_name, name in pairs:
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            try:
                importlib.import_module(f"{module_name}.{name}")
            except ImportError:
                missing.append(f"from {module_name} import {name}")
    assert not missing, f"{script.name} imports names that do not exist: {missing}"


def test_the_scan_sees_the_lazy_imports_inside_functions():
    pairs = first_party_imports(Path(__file__).parents[2] / "benchmarks" / "rl_levels.py")
    assert ("evals.tasks", "tasks_from_frame") in pairs
