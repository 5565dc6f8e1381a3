import subprocess
import sys
from pathlib import Path

import pytest

from lineage import dvc


def sh(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True, timeout=120)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    sh("git", "init", "-q", cwd=root)
    sh(sys.executable, "-m", "dvc", "init", "-q", cwd=root)
    sh(sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=root)
    (root / "dvc.yaml").write_text(
        "stages:\n  curate:\n    cmd: python -m tasks curate\n    outs:\n      - data/curate\n"
    )
    return root


def test_commit_stage_records_pushes_and_leaves_status_clean(repo, tmp_path):
    out = repo / "data" / "curate"
    out.mkdir(parents=True)
    (out / "table.txt").write_text("rows\n")
    hashes = dvc.commit_stage("curate", repo=repo)
    assert list(hashes) == ["data/curate"] and hashes["data/curate"].endswith(".dir")
    assert any((tmp_path / "remote").rglob("*")), "remote holds nothing"
    assert "up to date" in dvc.status(repo=repo).lower() or dvc.status(repo=repo).strip() == ""
    assert "in sync" in dvc.status(repo=repo, cloud=True).lower()
    (out / "table.txt").write_text("changed\n")
    assert "modified" in dvc.status(repo=repo)
    second = dvc.commit_stage("curate", repo=repo)
    assert second["data/curate"] != hashes["data/curate"]


def test_commit_outside_a_dvc_repo_fails_clearly(tmp_path):
    with pytest.raises(dvc.DvcError, match="not a DVC repository"):
        dvc.commit_stage("curate", repo=tmp_path)


def test_project_dvc_yaml_mirrors_the_workflow_stages():
    import yaml

    from workflows.pipeline import STAGES

    root = Path(__file__).resolve().parents[2]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == STAGES
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m tasks {name}"
        assert stage["outs"] == [f"data/{name}"]


def _first_party_imports(path, root, packages) -> set[str]:
    """Dotted first-party modules ``path`` imports (absolute and relative, ``from m import x`` also as ``m.x``)."""
    import ast

    found = set()
    here = path.relative_to(root).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else ()
            module = ".".join(base + ((node.module,) if node.module else ()))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in packages}


def _module_files(module: str, root) -> list:
    """The files that run when ``module`` is imported: its own and every parent package's ``__init__``."""
    parts, files = module.split("."), []
    for i in range(1, len(parts) + 1):
        target = root.joinpath(*parts[:i])
        for candidate in (target / "__init__.py", target.with_suffix(".py")):
            if candidate.exists():
                files.append(candidate)
    return files


def test_each_dvc_stage_lists_the_code_it_runs_as_deps():
    """dvc.yaml deps are also each stage's Flyte cache key (``tasks.common.stage_cache``): a package a stage
    imports but does not list could change its outputs without invalidating either. Lineage bookkeeping
    (``lineage``, the ``tasks/*.py`` helpers) records runs and does not shape outputs, so it is exempt."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        seen, todo, needed = set(), list((root / "tasks" / name).glob("*.py")), set()
        while todo:
            path = todo.pop()
            parts = path.relative_to(root).parts
            if path in seen or parts[0] == "lineage" or (parts[0] == "tasks" and len(parts) == 2):
                continue
            seen.add(path)
            needed.add(f"tasks/{parts[1]}" if parts[0] == "tasks" else parts[0])
            todo += [f for m in _first_party_imports(path, root, packages) for f in _module_files(m, root)]
        listed = {dep.rstrip("/") for dep in stage["deps"]}
        assert needed <= listed, f"stage {name}: add {sorted(needed - listed)} to its deps in dvc.yaml"
