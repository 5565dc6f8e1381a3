"""The migration stage on two ranks (torchrun, gloo on CPU) against one process with the same global batch
(micro-batch 2 x 2 ranks vs 4 x 1; in the context extension 1 x 2 vs 2 x 1): every rank converts (seeded
Lightning initialisation, QK-Norm fusion and TransMLA calibrated on the same windows), trains the phases and the
extension in lockstep, and rank 0 alone evaluates, exports and records.

The two runs differ only in fp32 reduction order (gradients averaged over 2 ranks of 2 rows vs over 4 rows;
calibration statistics summed over 4 batches of 2 vs 2 of 4: the gradients agree to ~1e-6 relative), and Adam
turns that noise into whole steps: an element whose gradient is below the noise moves by ±lr in a direction
the noise picks. So the tolerances, at lr 1e-4 in every phase and 2 extension steps:

    held-out loss at every measurement point    torch backend and DeepSpeed ZeRO-0 (an all-reduce of the whole
                                                gradient): within 1e-4 nats (measured: <= 2.2e-5 for both);
                                                DeepSpeed ZeRO-3 (reduce-scatter in buckets): within 1e-3 nats
                                                (measured: <= 3.1e-4, at the last point)
    exported weights, element by element        torch, ZeRO-0: within 5e-4 absolute, a few such steps
                                                (measured: <= 3.3e-4); ZeRO-3: within 1.5e-3 (measured:
                                                <= 7.3e-4, in TransMLA's q_b_proj, calibrated on weights that
                                                already differ; every other tensor <= 4e-4)

At the tiny world's own learning rate (3e-3, 6 extension steps) the same round-off grows far past these bounds
(~0.07 nats after the extension; TransMLA's factors then differ elementwise by up to ~0.9).
The two runs see the same rows at every step and one step's gradient over a batch equals the mean of its rows'
to ~6e-7 relative, so that is the recipe's sensitivity to round-off at that rate, not a rank difference.
The DeepSpeed runs are marked slow (~35-45 s each on 2 cores, DeepSpeed's import and seven engines per run).
"""

import dataclasses
import json
import os
from pathlib import Path

import mlflow
import pytest
import torch
from migrate_world import EXTENSION, migrate_config
from safetensors.torch import load_file

from configs import to_json
from configs.migrate import MigratePhaseConfig
from configs.training import EngineConfig
from training.launch import run_distributed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LR = 1e-4
# engine -> (its config, held-out loss tolerance in nats, exported weights' absolute tolerance)
ENGINES = {
    "torch": (EngineConfig(backend="torch"), 1e-4, 5e-4),
    "zero0": (EngineConfig(backend="deepspeed", zero_stage=0), 1e-4, 5e-4),
    "zero3": (EngineConfig(backend="deepspeed", zero_stage=3), 1e-3, 1.5e-3),
}


def config(world, engine: EngineConfig, nproc: int):
    """The world's migration at learning rate ``LR``, the global batch split over ``nproc`` ranks."""
    (stage,) = EXTENSION.stages
    stage = dataclasses.replace(stage, micro_batch_size=2 // nproc, steps=2, lr=LR)
    phase = lambda steps: MigratePhaseConfig(steps=steps, lr=LR, warmup_steps=2)  # noqa: E731
    mcfg = migrate_config(engine=engine, micro_batch_size=4 // nproc, parity_margin_nats=100.0,
                          linear_warmup=phase(8), partial_training=phase(4), mla_warmup=phase(8),
                          continued_pretraining=phase(16),
                          context_extension=dataclasses.replace(EXTENSION, stages=(stage,)))  # fmt: skip
    return dataclasses.replace(world.cfg, migrate=mcfg)


def run_stage(world, root: Path, engine: EngineConfig, nproc: int) -> Path:
    """The stage on ``nproc`` ranks with its own run state; rank 0's output folder."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(to_json(config(world, engine, nproc)))
    # The store named outright: the workers inherit this process's environment (training.launch.run_distributed).
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'state' / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        "LING26_STATE_DIR": str(root / "state"),
        "LING26_DATA_DIR": str(root / "data"),
        "OMP_NUM_THREADS": "1",
        "LING26_PROGRESS": "0",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".ling26" / "torch_extensions")),
    }
    args = [str(root / "config.json"), str(world.curated), str(world.base), str(root / "worker-data")]
    run_distributed("stage_on_ranks:main", nproc, args, env=env, timeout=600)
    return root / "data" / "migrate"


@pytest.mark.parametrize("engine", ["torch", *(pytest.param(e, marks=pytest.mark.slow) for e in ("zero0", "zero3"))])
def test_two_rank_stage_equals_one_process(world, tmp_path, engine):
    engine_cfg, loss_atol, weight_atol = ENGINES[engine]
    two = run_stage(world, tmp_path / "two", engine_cfg, 2)
    one = run_stage(world, tmp_path / "one", engine_cfg, 1)
    two_metrics = json.loads((two / "metrics.json").read_text())
    one_metrics = json.loads((one / "metrics.json").read_text())
    assert two_metrics["parity_gate"]["passed"] and two_metrics["total_steps"] == one_metrics["total_steps"]
    assert [p["point"] for p in two_metrics["steps"]] == [p["point"] for p in one_metrics["steps"]]
    for ours, theirs in zip(two_metrics["steps"], one_metrics["steps"], strict=True):
        assert ours["heldout_loss"] == pytest.approx(theirs["heldout_loss"], abs=loss_atol), ours["point"]
    two_weights = load_file(str(two / "checkpoint" / "model.safetensors"))
    one_weights = load_file(str(one / "checkpoint" / "model.safetensors"))
    assert two_weights.keys() == one_weights.keys()
    for name, tensor in two_weights.items():
        torch.testing.assert_close(tensor, one_weights[name], rtol=0, atol=weight_atol, msg=name)

    # Rank 1 (its own LING26_DATA_DIR) wrote no stage output and opened no MLflow run: one run, rank 0's.
    assert not (tmp_path / "two" / "worker-data").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'two' / 'state' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(world.cfg.lineage.experiment).experiment_id])
    assert run.info.run_name == "migrate" and run.info.status == "FINISHED"
