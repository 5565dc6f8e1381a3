"""The source files a stage runs: the first-party import closure of its task modules, read from the AST
(absolute and relative imports, ``from m import x`` also as ``m.x``, every parent package's ``__init__``).

Flyte's cache key for a stage (``tasks.common.stage_cache``) hashes exactly these files, so an edit to
curation's dedup code re-runs curation and nothing that does not import it. ``dvc.yaml`` lists the same
closure folder by folder (a superset; ``tests/lineage/test_dvc.py`` checks that nothing is missing).
Lineage bookkeeping (``lineage``, the shared ``tasks/*.py`` helpers) records runs without shaping outputs
and is left out, so a change to how runs are logged does not invalidate trained models.
"""

from __future__ import annotations

import ast
from pathlib import Path

from lineage.paths import REPO_ROOT


def first_party_packages(root: Path = REPO_ROOT) -> set[str]:
    return {p.name for p in root.iterdir() if (p / "__init__.py").exists()}


def imported_modules(path: Path, root: Path, packages: set[str]) -> set[str]:
    """Dotted first-party modules ``path`` imports."""
    found: set[str] = set()
    here = path.relative_to(root).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else ()
            module = ".".join(base + ((node.module,) if node.module else ()))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in packages}


def module_files(module: str, root: Path) -> list[Path]:
    """The files that run when ``module`` is imported: its own and every parent package's ``__init__``."""
    parts, files = module.split("."), []
    for i in range(1, len(parts) + 1):
        target = root.joinpath(*parts[:i])
        for candidate in (target / "__init__.py", target.with_suffix(".py")):
            if candidate.exists():
                files.append(candidate)
    return files


def is_bookkeeping(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return parts[0] == "lineage" or (parts[0] == "tasks" and len(parts) == 2)


def stage_code_files(stage: str, root: Path = REPO_ROOT) -> list[Path]:
    """Every first-party source file that stage ``stage``'s task modules (``tasks/<stage>/``) import,
    transitively, bookkeeping excluded; sorted."""
    packages = first_party_packages(root)
    seen: set[Path] = set()
    todo = sorted((root / "tasks" / stage).glob("*.py"))
    while todo:
        path = todo.pop()
        if path in seen or is_bookkeeping(path, root):
            continue
        seen.add(path)
        todo += [f for m in imported_modules(path, root, packages) for f in module_files(m, root)]
    return sorted(seen)


def stage_code_folders(stage: str, root: Path = REPO_ROOT) -> set[str]:
    """The folders of :func:`stage_code_files`, as ``dvc.yaml`` lists them (``tasks/<stage>`` for a stage)."""
    folders = set()
    for path in stage_code_files(stage, root):
        parts = path.relative_to(root).parts
        folders.add(f"tasks/{parts[1]}" if parts[0] == "tasks" else parts[0])
    return folders
