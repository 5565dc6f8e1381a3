"""The tiny workflow end to end through Flyte's local execution, twice: the second run is served from
Flyte's cache. Small overrides keep it to a minute or two on 2 cores; a fresh seed per test session keeps
the first run from hitting a cache entry left by an earlier session."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lineage.paths import state_dir, tracking_uri

ROOT = Path(__file__).resolve().parents[2]
SEED = random.SystemRandom().randrange(10**6, 10**9)
OVERRIDES = {
    "seed": SEED,
    "lineage.dvc": False,
    "environments.sft_prompts_per_family": 24,
    "environments.rl_prompts_per_family": 8,
    "environments.eval_prompts_per_family": 10,
    "environments.max_difficulty": 2,
    "curate.stdlib_max_files": 10,
    "curate.env_pretrain_prompts_per_family": 40,
    "curate.vocab_size": 512,
    "model.vocab_size": 512,
    "pretrain.loop.max_steps": 6,
    "pretrain.loop.checkpoint_every": 3,
    "pretrain.loop.micro_batch_size": 4,
    "pretrain.loop.seq_len": 64,
    "pretrain.eval.prompts_per_family": 2,
    "pretrain.eval.max_new_tokens": 24,
    "pretrain.eval.heldout_windows": 8,
    "migrate.linear_warmup.steps": 2,
    "migrate.partial_training.steps": 1,
    "migrate.mla_warmup.steps": 2,
    "migrate.continued_pretraining.steps": 4,
    "migrate.micro_batch_size": 4,
    "migrate.seq_len": 64,
    "migrate.calibration_windows": 4,
    "migrate.heldout_windows": 8,
    "migrate.checkpoint_every": 2,
    "migrate.merge_last_k": 2,
    "migrate.keep_checkpoints": 2,
    # A few steps cannot recover the base: the gate's own pass/fail behaviour is tested in tests/migrate.
    "migrate.parity_margin_nats": 100.0,
    # Context extension 64 -> 256 in 2 steps; retrieval on 2 lengths x 1 depth before and after.
    "migrate.context_extension.stages": [{"seq_len": 256, "steps": 2, "lr": 1e-3, "micro_batch_size": 2}],
    "migrate.context_extension.train_haystacks": 8,
    "migrate.context_extension.retrieval_lengths": [128, 256],
    "migrate.context_extension.retrieval_depths": [0.5],
    "migrate.context_extension.retrieval_samples_per_cell": 1,
    "post_train.sft.steps": 3,
    "post_train.sft.batch_size": 4,
    "post_train.rl.steps": 1,
    "post_train.rl.prompts_per_step": 2,
    "post_train.rl.samples_per_prompt": 2,
    "post_train.rl.max_new_tokens": 16,
    "post_train.preference.steps": 1,
    "post_train.preference.prompts_per_step": 2,
    "post_train.preference.samples_per_prompt": 2,
    "post_train.eval.prompts_per_family": 1,
    "post_train.eval.max_new_tokens": 16,
    "kpop_rl.steps": 2,
    "kpop_rl.batch_groups": 1,
    "kpop_rl.samples_per_prompt": 2,
    "kpop_rl.max_new_tokens": 16,
    "kpop_rl.step_token_budget": 32,
    "kpop_rl.curriculum_probe_prompts": 2,
    "kpop_rl.curriculum_probe_samples": 2,
    "kpop_rl.prompts_per_family": 1,
    "kpop_rl.eval_prompts_per_family": 1,
    "kpop_rl.eval_max_new_tokens": 16,
    "distill.sampling.prompts_per_family": 1,
    "distill.sampling.max_new_tokens": 16,
    "distill.logit.steps": 2,
    "distill.on_policy.steps": 1,
    "distill.on_policy.prompts_per_step": 2,
    "distill.on_policy.max_new_tokens": 16,
    "distill.eval.prompts_per_family": 1,
    "distill.eval.max_new_tokens": 16,
    "evaluate.prompts_per_family": 1,
    "evaluate.max_new_tokens": 16,
    "evaluate.pass_k": [1, 2],
    "evaluate.samples_per_prompt": 2,
    "evaluate.heldout_windows": 4,
    "evaluate.heldout_seq_len": 64,
    "evaluate.retrieval.lengths": [64, 96],
    "evaluate.retrieval.depths": [0.0],
    "evaluate.retrieval.samples_per_cell": 1,
    "evaluate.lm_eval.limit": 2,
    "evaluate.lm_eval.max_gen_toks": 8,
    # A few steps train nothing worth gating: the gates' own pass/fail behaviour is tested in tests/evals.
    "evaluate.gate.min_accuracy.all": 0.0,
    "evaluate.gate.max_accuracy_regression": None,
    "evaluate.gate.max_heldout_loss_regression": None,
    "evaluate.gate.max_tokens_per_correct": None,
    "evaluate.gate.min_format_rate": None,
    # A developer's edited tree must not stop the test, nor DVC being off here; the card records both.
    "publish.allow_dirty": True,
    "publish.allow_unversioned": True,
}


def run_pipeline() -> subprocess.CompletedProcess:
    cmd = [
        str(Path(sys.executable).with_name("pyflyte")),
        "--config",
        str(ROOT / "flyte.config"),
        "run",
        "--raw-output-data-prefix",
        str(state_dir() / "flyte-raw"),
        "workflows/pipeline.py",
        "ling26_pipeline",
        "--profile",
        "tiny_cpu",
        "--overrides",
        json.dumps(OVERRIDES),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LING26_PROGRESS": "0"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def two_runs():
    first = run_pipeline()
    # Flyte prints a failed task's traceback to stdout, the stages log to stderr: show the end of both.
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    second = run_pipeline()
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("ling26-pipeline")
    parents = client.search_runs(
        [exp.experiment_id],
        f"tags.`ling26.pipeline` = 'parent' and params.seed = '{SEED}'",
        order_by=["attributes.start_time ASC"],
    )
    assert len(parents) == 2
    return client, exp, parents, first, second


def children(client, exp, parent):
    runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {r.data.tags["ling26.stage"]: r for r in runs}


@pytest.mark.e2e
def test_first_run_nests_every_stage_with_lineage(two_runs):
    client, exp, parents, _, _ = two_runs
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    stages = children(client, exp, parent)
    from workflows.pipeline import STAGES

    assert set(stages) == set(STAGES)
    for name, run in stages.items():
        assert run.info.status == "FINISHED", name
        manifest = json.loads(Path(client.download_artifacts(run.info.run_id, "manifest.json")).read_text())
        for key in ("packages", "git_sha", "git_dirty", "seed", "device", "flyte_execution_id", "config_hash"):
            assert key in manifest, (name, key)
        assert manifest["seed"] == SEED
        assert run.data.params["seed"] == str(SEED)
        assert run.inputs.dataset_inputs, f"{name} logged no dataset inputs"
        assert all(d.dataset.digest for d in run.inputs.dataset_inputs)
    curate = stages["curate"]
    report = json.loads(Path(client.download_artifacts(curate.info.run_id, "contract_report.json")).read_text())
    for table in report["tables"].values():
        assert table["rows_in"] == table["rows_kept"] + table["rows_quarantined"]
    artifacts = {a.path for a in client.list_artifacts(curate.info.run_id, "plots")}
    assert "plots/quarantine_by_rule.png" in artifacts
    pretrain = stages["pretrain"]
    assert pretrain.data.metrics["heldout_loss"] > 0
    assert {m.step for m in client.get_metric_history(pretrain.info.run_id, "loss")}, "no per-step loss"


@pytest.mark.e2e
def test_second_run_is_served_from_flyte_cache(two_runs):
    client, exp, parents, _, _ = two_runs
    assert parents[1].info.status == "FINISHED"
    # A cached stage does not execute, so it opens no nested run under the second parent.
    assert children(client, exp, parents[1]) == {}


@pytest.mark.e2e
def test_post_training_phases_are_nested_runs_with_their_metrics_and_plots(two_runs):
    client, exp, parents, _, _ = two_runs
    post_train = children(client, exp, parents[0])["post_train"]
    nested = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{post_train.info.run_id}'")
    phases = {r.data.tags["ling26.phase"]: r for r in nested}
    assert set(phases) == {"sft", "rl", "preference"}
    assert {"reward", "accuracy", "mean_response_tokens", "clip_fraction"} <= set(phases["rl"].data.metrics)
    for name, run in phases.items():
        assert run.info.status == "FINISHED", name
        assert f"eval.{name}.all.accuracy" in run.data.metrics, name
        assert f"plots/{name}_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    # The base evaluation and the summary across phases stay in the stage's own run.
    assert "eval.base.all.accuracy" in post_train.data.metrics
    assert "plots/accuracy_by_phase.png" in {a.path for a in client.list_artifacts(post_train.info.run_id, "plots")}


@pytest.mark.e2e
def test_every_checkpoint_is_evaluated_and_the_gated_one_published(two_runs):
    client, exp, parents, _, _ = two_runs
    stages = children(client, exp, parents[0])
    evaluate, publish = stages["evaluate"], stages["publish"]
    assert evaluate.data.tags["evaluation_gate"] == "passed" and evaluate.data.metrics["gate.passed"] == 1.0
    table = client.download_artifacts(evaluate.info.run_id, "evaluation/comparison.parquet")
    import pandas as pd

    assert list(dict.fromkeys(pd.read_parquet(table)["checkpoint"])) == [
        "pretrain",
        "migrate",
        "post_train",
        "kpop_rl",
        "distill",
    ]
    version = client.get_model_version("ling26-tiny", publish.data.tags["publish.model_version"])
    assert version.run_id == publish.info.run_id
    assert client.get_registered_model("ling26-tiny").aliases.get("champion") == version.version
    # Every stage's checkpoint is a logged model of its run, and every Deck an artifact.
    import mlflow

    logged = {
        m.source_run_id for m in mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    }
    assert {stages[name].info.run_id for name in ("pretrain", "migrate", "post_train", "kpop_rl", "distill")} <= logged
    for name, run in stages.items():
        assert f"deck/{name}.html" in {a.path for a in client.list_artifacts(run.info.run_id, "deck")}, name
