"""``python -m workflows.cli run --remote``: refused with a clear message when no cluster is configured (nothing
is built or sent), and otherwise the ``pyflyte run --remote`` of the profile's own workflow. No cluster is
reachable here, so the launch itself is replaced by a recorder of the command it would run."""

import subprocess

import pytest

from workflows import cli, pipeline


@pytest.fixture
def launches(monkeypatch):
    """Commands the CLI starts, recorded instead of run; each 'succeeds'."""
    started = []

    def record(cmd, **kwargs):
        started.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cli.subprocess, "run", record)
    monkeypatch.setattr(cli, "report_local_run", lambda *a, **k: started.append("local report"))
    return started


def test_remote_without_an_endpoint_is_refused_before_anything_starts(monkeypatch, launches, capsys):
    monkeypatch.delenv("FLYTE_PLATFORM_URL", raising=False)
    assert cli.remote_endpoint() is None, "the repository's flyte.config must keep the local default"
    assert cli.main(["run", "--remote", "--profile", "ling26_flash"]) == 2
    err = capsys.readouterr().err
    assert "no endpoint is configured" in err and "[platform]" in err and "flyte.config" in err
    assert launches == []


def test_remote_launches_the_profiles_own_workflow(monkeypatch, launches):
    monkeypatch.setenv("FLYTE_PLATFORM_URL", "dns:///flyte.example.com")
    assert cli.remote_endpoint() == "flyte.example.com"
    assert cli.main(["run", "--remote", "--profile", "ling26_flash", "--overrides", "seed=7"]) == 0
    (cmd,) = launches  # no local MLflow report after a remote submission
    assert cmd[cmd.index("run") + 1 :] == [
        "--remote",
        "workflows/pipeline.py",
        "ling26_flash_pipeline",
        "--overrides",
        '{"seed": 7}',
    ]
    assert cmd[cmd.index("--config") + 1] == str(cli.FLYTE_CONFIG)
    # The named workflow exists and takes no profile: the profile is compiled into it.
    workflow = pipeline.ling26_flash_pipeline
    assert set(workflow.python_interface.inputs) == {"overrides", "extra_documents"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--overrides", "cluster.curate.memory=256Gi"], "cluster.curate.memory"),
        (["--extra-documents", "docs.jsonl"], "--extra-documents"),
    ],
)
def test_remote_refuses_what_only_a_local_run_can_take(monkeypatch, launches, capsys, argv, message):
    monkeypatch.setenv("FLYTE_PLATFORM_URL", "flyte.example.com")
    assert cli.main(["run", "--remote", "--profile", "ling26_flash", *argv]) == 2
    assert message in capsys.readouterr().err
    assert launches == []


def test_the_local_run_is_unchanged(monkeypatch, launches):
    """Without --remote: ling26_pipeline with the profile as an input, raw outputs under the run state."""
    monkeypatch.delenv("FLYTE_PLATFORM_URL", raising=False)
    assert cli.main(["run", "--profile", "tiny_cpu"]) == 0
    cmd, report = launches
    assert report == "local report" and "--remote" not in cmd
    assert cmd[-6:-2] == ["workflows/pipeline.py", "ling26_pipeline", "--profile", "tiny_cpu"]
    assert "--raw-output-data-prefix" in cmd
