"""The pre-training Flyte task under kfpytorch ``Elastic(nnodes=1, nproc_per_node=2)`` on CPU (gloo,
DeepSpeed): both ranks train in lockstep, rank 0 alone writes lineage and outputs, and the task returns
rank 0's outputs.

The Elastic task is the one a profile's cluster config declares (``cluster.pretrain.nproc_per_node=2`` through
``workflows.scale.profile_task``), run in a subprocess so that torchrun's workers start from a clean process.
Run state (MLflow store, outputs, training checkpoints) goes to this test's own folder, and Flyte's local
cache is off, so nothing from another run can stand in for this one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pretrain_stage import SMALL

from configs import config_hash, resolve, to_dict, to_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# ZeRO-2: the ranks must reduce the same parameter set, idle experts included (model/moe.py).
OVERRIDES = {
    **SMALL,
    "pretrain.engine.backend": "deepspeed",
    "pretrain.engine.zero_stage": 2,
    "lineage.dvc": False,
    "cluster.pretrain.nproc_per_node": 2,
    "cluster.data_parallel": 2,
}


@pytest.fixture(scope="module")
def elastic_run(tmp_path_factory):
    """Curate, open the parent MLflow run, run the task on 2 processes; its outputs and the run state."""
    from corpus.curation import run_curation

    root = tmp_path_factory.mktemp("elastic")
    # An MLFLOW_TRACKING_URI left in the environment by an earlier test (mlflow.set_tracking_uri exports it)
    # would win over this test's state folder.
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env = {
        **inherited,
        "LING26_STATE_DIR": str(root / "state"),
        "LING26_DATA_DIR": str(root / "state" / "data"),
        "FLYTE_LOCAL_CACHE_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
        "LING26_PROGRESS": "0",
        # DeepSpeed's shared-memory comm op is built once and kept with the repo's run state.
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".ling26" / "torch_extensions")),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
    }
    cfg = resolve("tiny_cpu", OVERRIDES)
    run_curation(cfg, root / "curated")
    (root / "config.json").write_text(to_json(cfg))
    parent_run_id = open_parent_run(cfg, env)
    cmd = [
        sys.executable,
        str(HERE / "elastic_pretrain.py"),
        str(root / "config.json"),
        parent_run_id,
        str(root / "curated"),
        str(root / "outputs.json"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return cfg, root, parent_run_id, json.loads((root / "outputs.json").read_text())


def open_parent_run(cfg, env) -> str:
    """The pipeline's parent run, opened in a subprocess so that this test's store stays its own."""
    code = (
        "import json, sys; from lineage.runs import open_pipeline_run; "
        "print(open_pipeline_run(**json.loads(sys.argv[1])))"
    )
    kwargs = {
        "experiment": cfg.lineage.experiment,
        "configured_uri": cfg.lineage.tracking_uri,
        "profile": cfg.profile,
        "config_hash": config_hash(cfg),
        "config": to_dict(cfg),
        "seed": cfg.seed,
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip().splitlines()[-1]


def mlflow_runs(root: Path, experiment: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'state' / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_the_task_ran_under_elastic_and_returned_rank_0s_outputs(elastic_run):
    cfg, root, _, outputs = elastic_run
    assert outputs["task_config"] == "Elastic"
    metrics = json.loads((Path(outputs["base"]) / "metrics.json").read_text())
    assert metrics == json.loads((root / "state" / "data" / "pretrain" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["merged_checkpoints"] == cfg.pretrain.optim.merge_last_k
    loop = cfg.pretrain.loop
    assert metrics["train_tokens"] == loop.max_steps * loop.micro_batch_size * loop.seq_len * loop.grad_accum_steps * 2
    assert (Path(outputs["base"]) / "checkpoint" / "model.safetensors").is_file()
    assert outputs["report"]["summary_metrics"]["heldout_loss"] == pytest.approx(metrics["heldout_loss"])


def test_both_ranks_trained_with_sharded_optimizer_state(elastic_run):
    """ZeRO-2 over 2 ranks: each rank's checkpoint holds its own half of the optimizer state (same layout,
    different numbers). That the two-rank reduction equals one process on the same global batch is
    tests/training/test_train_distributed.py; that idle experts still reduce is tests/model/test_router.py."""
    cfg, root, _, _ = elastic_run
    last = root / "state" / "checkpoints" / "pretrain" / config_hash(cfg) / f"step-{cfg.pretrain.loop.max_steps:06d}"
    manifest = json.loads((last / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["step"] == cfg.pretrain.loop.max_steps
    rank0 = load_file(str(last / "optimizer-rank0.safetensors"))
    rank1 = load_file(str(last / "optimizer-rank1.safetensors"))
    assert rank0.keys() == rank1.keys() and rank0
    shards = [name for name, t in rank0.items() if t.numel() > 1]
    assert shards
    for name in shards:
        assert rank0[name].shape == rank1[name].shape and torch.isfinite(rank0[name]).all()
        assert not torch.equal(rank0[name], rank1[name]), f"{name}: both ranks hold the same state, not halves"


def test_rank_0_alone_wrote_lineage(elastic_run):
    cfg, root, parent_run_id, outputs = elastic_run
    runs = mlflow_runs(root, cfg.lineage.experiment)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_run_id]
    assert len(runs) == 2 and len(children) == 1, "a worker rank opened an MLflow run"
    (child,) = children
    assert child.info.run_name == "pretrain" and child.info.status == "FINISHED"
    assert child.info.run_id == outputs["report"]["mlflow_run_id"]
    assert child.data.metrics["world_size"] == 2
    assert sorted(p.name for p in (root / "state" / "data").iterdir()) == ["pretrain"]


@pytest.mark.parametrize(("world_size", "leaves"), [("2", True), ("1", False)])
def test_launched_workers_end_by_leaving_the_process_group(monkeypatch, world_size, leaves):
    """Under a launcher every rank ends with destroy_process_group(); a plain process keeps its world of one."""
    import training.launch
    from tasks.stage import _leave_launched_world

    calls = []
    monkeypatch.setattr(training.launch, "leave_process_group", lambda: calls.append(world_size))
    monkeypatch.setenv("WORLD_SIZE", world_size)
    _leave_launched_world()
    assert calls == ([world_size] if leaves else [])
