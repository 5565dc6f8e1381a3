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
        "stages:\n  curate:\n    cmd: python -m tasks.curate\n    outs:\n      - data/curate\n"
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
        assert stage["cmd"] == f"python -m tasks.{name}"
        assert stage["outs"] == [f"data/{name}"]
