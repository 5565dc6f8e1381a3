"""The stage's lineage record: every plot and table for a passed gate and for a failed one (no eval, no
checkpoint), and the Flyte task's wiring."""

import copy

from tasks.migrate.report import record_migrate


class RecordingRun:
    run_id = "test"

    def __init__(self):
        self.metrics, self.figures, self.dicts, self.artifacts = {}, [], [], []

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_figure(self, figure, artifact):
        self.figures.append(artifact)

    def log_dict(self, data, artifact):
        self.dicts.append(artifact)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(path.name)

    def log_file_input(self, path, *, name, context):
        assert path.exists(), path
        return ""


def history_of(logged):
    history = {}
    for name, step, metrics in logged:
        history.setdefault(name, []).append((step, metrics))
    return history


def test_record_of_a_passed_gate(passed_run, world):
    run = RecordingRun()
    deck = record_migrate(
        run, passed_run.metrics, world.curated, world.base, passed_run.out_dir, history_of(passed_run.logged)
    )
    assert set(run.figures) == {
        "plots/loss.png",
        "plots/kl_vs_base.png",
        "plots/kl_per_conversion.png",
        "plots/parity_gate.png",
        "plots/retrieval_by_length.png",
    }
    assert run.metrics["parity_gate.passed"] == 1.0 and "eval.all.accuracy" in run.metrics
    assert set(run.artifacts) == {"eval_summary.parquet", "eval_rollouts.parquet", "retrieval.parquet"}
    assert "Parity gate PASSED" in deck and "Evaluation (migrated vs base)" in deck
    # Retrieval before and after extension: every cell, per length and overall, as measured.
    table = passed_run.metrics["context_extension"]["retrieval"]
    for row in table:
        key = f"retrieval.{row['checkpoint']}.L{row['length']}.d{row['depth']:g}"
        assert run.metrics[key] == row["accuracy"], key
    for checkpoint in ("before_extension", "after_extension"):
        rows = [r["accuracy"] for r in table if r["checkpoint"] == checkpoint]
        assert run.metrics[f"retrieval.{checkpoint}.all"] == sum(rows) / len(rows)
    assert "Context extension to 128 tokens (YaRN factor 4)" in deck


def test_record_of_a_failed_gate(passed_run, world, tmp_path):
    metrics = copy.deepcopy(passed_run.metrics)
    for key in ("eval", "params_total", "params_active"):
        metrics.pop(key)
    metrics["parity_gate"] |= {"passed": False, "margin_nats": -10.0}
    run = RecordingRun()
    deck = record_migrate(run, metrics, world.curated, world.base, tmp_path, history_of(passed_run.logged))
    assert "plots/parity_gate.png" in run.figures and run.metrics["parity_gate.passed"] == 0.0
    assert "Parity gate FAILED" in deck and not run.artifacts


def test_flyte_task_signature():
    import inspect

    from tasks.migrate.task import STAGE, migrate
    from tasks.stage import StageOutputs

    params = inspect.signature(migrate.task_function).parameters
    assert list(params) == ["config_json", "parent_run_id", "curated", "base"]
    assert inspect.signature(migrate.task_function).return_annotation in (StageOutputs, "StageOutputs")
    assert STAGE.inputs == ("curate", "pretrain")
