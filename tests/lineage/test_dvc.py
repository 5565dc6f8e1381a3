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


def test_each_dvc_stage_lists_the_code_it_runs_as_deps():
    """dvc.yaml deps must cover the import closure of each stage's task modules (``lineage.code_deps``),
    the same files Flyte's cache key hashes: a module a stage imports but DVC does not list could change
    its outputs without DVC noticing."""
    import yaml

    from lineage.code_deps import stage_code_folders

    root = Path(__file__).resolve().parents[2]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        needed = stage_code_folders(name, root)
        listed = {dep.rstrip("/") for dep in stage["deps"]}
        assert needed <= listed, f"stage {name}: add {sorted(needed - listed)} to its deps in dvc.yaml"


def test_a_stage_cache_key_ignores_code_the_stage_does_not_import():
    """An edit to curation's dedup must not invalidate pre-training's cache (it never imports dedup)."""
    from lineage.code_deps import stage_code_files

    root = Path(__file__).resolve().parents[2]
    curate = {p.relative_to(root).as_posix() for p in stage_code_files("curate", root)}
    pretrain = {p.relative_to(root).as_posix() for p in stage_code_files("pretrain", root)}
    assert "corpus/dedup.py" in curate and "corpus/dedup.py" not in pretrain
    assert "corpus/tokenizer.py" in pretrain and "training/loop.py" in pretrain
    assert not any(p.startswith("lineage/") for p in pretrain)
