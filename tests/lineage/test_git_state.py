"""The code state a run records: its own lineage files (dvc.lock, data/.gitignore) are not dirt, a real
edit or a new file is."""

import subprocess

from lineage.manifest import git_state


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_the_runs_own_lineage_files_do_not_make_the_tree_dirty_but_edits_do(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "data").mkdir()
    for name in ("dvc.lock", "data/.gitignore", "code.py"):
        (tmp_path / name).write_text("v1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "init")
    assert git_state(tmp_path)["git_dirty"] is False

    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "data" / ".gitignore").write_text("/curate\n")
    assert git_state(tmp_path)["git_dirty"] is False

    (tmp_path / "code.py").write_text("v2\n")
    assert git_state(tmp_path)["git_dirty"] is True
    git(tmp_path, "checkout", "code.py")
    (tmp_path / "new_module.py").write_text("x = 1\n")
    assert git_state(tmp_path)["git_dirty"] is True
