"""The KPop RL stage end to end on a tiny world: a checkpoint the evaluation stage can load, whose weights are
the last version the weight-sync protocol pushed; contract counts that add up; a finite mismatch report over
exactly the trained tokens; every rollout's versions within what was trained."""

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from rl_world import pipeline_config, write_world

from inference.sampling import SamplingParams

torch.set_num_threads(1)

SMALL = {
    "kpop_rl.steps": 3,
    "kpop_rl.batch_groups": 2,
    "kpop_rl.samples_per_prompt": 2,
    "kpop_rl.max_new_tokens": 16,
    "kpop_rl.chunk_tokens": 6,
    "kpop_rl.step_token_budget": 40,
    "kpop_rl.max_tool_turns": 1,
    "kpop_rl.curriculum_probe_prompts": 2,
    "kpop_rl.curriculum_probe_samples": 2,
    "kpop_rl.prompts_per_family": 2,
    "kpop_rl.checkpoint_every": 1,
    "kpop_rl.eval_prompts_per_family": 2,
    "kpop_rl.eval_max_new_tokens": 12,
    "kpop_rl.eval_max_tool_turns": 1,
}


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """The stage as the pipeline runs it (``tasks.stage.execute``: its MLflow run, its report), over the world."""
    from lineage.paths import stage_dir
    from tasks.kpop_rl.task import STAGE
    from tasks.stage import execute

    cfg = pipeline_config(**SMALL)
    root = tmp_path_factory.mktemp("kpop_rl_world")
    curated, post_train = root / "curate", root / "post_train"
    curated.mkdir()
    post_train.mkdir()
    write_world(cfg, curated, post_train)
    report, result = execute(STAGE, cfg, None, {"curate": curated, "post_train": post_train}, {})
    out = stage_dir("kpop_rl")
    metrics = json.loads((out / "metrics.json").read_text())
    return SimpleNamespace(cfg=cfg, out=out, metrics=metrics, report=report, result=result)


def test_checkpoint_loads_and_holds_the_last_pushed_version(stage):
    from evals.compare import load_engine
    from inference.weight_sync import state_checksum

    engine = load_engine(stage.out / "checkpoint")
    (gen,) = engine.generate(["[code] f(s): uppercase\n"], SamplingParams(max_new_tokens=4, temperature=0.0))
    assert gen.token_ids or gen.finish_reason == "eos"
    versions = json.loads((stage.out / "versions.json").read_text())
    steps = stage.cfg.kpop_rl.steps
    assert sorted(map(int, versions)) == list(range(steps + 1))
    # The engine ran bf16 copies: the exported fp32 weights, cast as the trainer cast them, are the last push.
    rollout_model = engine.model.to(torch.bfloat16)
    assert state_checksum(rollout_model.state_dict()) == versions[str(steps)]
    assert not (stage.out / "resume").exists()


def test_rollout_contract_counts_add_up(stage):
    from data_contracts.rollouts import RolloutRow

    contract = stage.metrics["contracts"]["rollouts"]
    rollouts = RolloutRow.validate(pd.read_parquet(stage.out / "rollouts.parquet"))
    steps = pd.read_parquet(stage.out / "steps.parquet")
    assert contract["rows_in"] == contract["rows_kept"] + contract["rows_quarantined"]
    assert contract["rows_kept"] == len(rollouts) == steps["rollouts_kept"].sum()
    assert contract["rows_in"] == (steps["rollouts_kept"] + steps["rollouts_quarantined"]).sum()
    assert len(pd.read_parquet(stage.out / "quarantine.parquet")) == contract["rows_quarantined"]
    # Every trained prompt with its whole group, once; versions never newer than the policy trained on them.
    assert (rollouts.groupby("prompt_index").size() == stage.cfg.kpop_rl.samples_per_prompt).all()
    assert (rollouts["max_version"] <= rollouts["trained_version"]).all()
    assert sorted(rollouts["step"].unique()) == list(range(1, stage.cfg.kpop_rl.steps + 1))
    assert set(rollouts["family"]) <= set(stage.cfg.kpop_rl.families)


def test_mismatch_report_is_finite_and_covers_every_trained_token(stage):
    summary = json.loads((stage.out / "mismatch_summary.json").read_text())
    tokens = pd.read_parquet(stage.out / "mismatch_tokens.parquet")
    rollouts = pd.read_parquet(stage.out / "rollouts.parquet")
    assert len(tokens) == summary["tokens"] == rollouts["model_tokens"].sum() > 0
    fresh = summary["fresh"]
    assert summary["fresh_tokens"] == (tokens["staleness"] == 0).sum() == fresh["num_tokens"] > 0
    for key in ("masked_fraction", "logp_abs_diff", "k3_kl", "ratio_min", "ratio_max"):
        assert math.isfinite(fresh[key]), key
    assert 0.0 <= fresh["masked_fraction"] <= 1.0 and fresh["k3_kl"] >= 0.0
    # bf16 rollouts against an fp32 trainer: a real gap, not a rounding-free copy.
    assert fresh["logp_abs_diff"] > 0.0
    assert sum(b["tokens"] for b in fresh["by_bucket"].values()) == fresh["num_tokens"]
    assert set(summary["by_method"]) == {"kpop", "icepop", "tis", "mis", "none"}
    assert summary["by_method"]["none"]["masked_fraction"] == 0.0
    assert (tokens["staleness"] >= 0).all() and (tokens["logp_infer"] <= 0).all()


def test_metrics_are_flat_floats_with_before_and_after_per_family(stage):
    flat = {k: v for k, v in stage.metrics.items() if k != "contracts"}
    assert all(isinstance(v, float) for v in flat.values())
    summary = pd.read_parquet(stage.out / "eval_summary.parquet")
    for family in stage.cfg.kpop_rl.families:
        for checkpoint in ("before", "after"):
            assert f"eval.{checkpoint}.{family}.accuracy" in flat
        assert f"curriculum.{family}.probe_pass_rate" in flat
    assert set(summary["checkpoint"]) == {"before", "after"}
    assert stage.metrics["rl.steps"] == stage.cfg.kpop_rl.steps


def test_the_mlflow_run_holds_isolation_curves_and_plots(stage):
    import mlflow

    from environments.sandbox import sandbox_isolation

    client = mlflow.MlflowClient()
    run = client.get_run(stage.report["mlflow_run_id"])
    assert run.data.params["sandbox_isolation"] == sandbox_isolation(
        allow_weak_isolation=stage.cfg.environments.sandbox_allow_weak_isolation
    )
    history = client.get_metric_history(run.info.run_id, "train.reward_mean")
    assert sorted(m.step for m in history) == list(range(1, stage.cfg.kpop_rl.steps + 1))
    assert run.data.metrics["contracts.rollouts.rows_in"] == stage.metrics["contracts"]["rollouts"]["rows_in"]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("reward", "mismatch", "accuracy_by_family", "mismatch_histogram")}
    assert "eval.after.all.accuracy" in stage.result.summary_metrics


def test_a_resume_folder_of_another_run_is_wiped_and_one_of_this_run_kept(tmp_path):
    from training.rl.run import _resume_dir

    folder = _resume_dir(tmp_path, "key-a")
    (folder / "checkpoints").mkdir()
    assert (_resume_dir(tmp_path, "key-a") / "checkpoints").exists()  # same config and base: resume
    assert not (_resume_dir(tmp_path, "key-b") / "checkpoints").exists()  # anything else: start afresh
