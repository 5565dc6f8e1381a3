"""The publish gate refuses, naming every reason, and refuses before anything is written or registered."""

import dataclasses

import pytest

from publishing import ContractTable, EvalGate, PublishRefused, SuiteResult, check_release, publish_release


def replace_stage(lineage, name, **changes):
    return tuple(dataclasses.replace(s, **changes) if s.stage == name else s for s in lineage.stages)


def test_complete_lineage_passes(lineage, config):
    verdict = check_release(lineage, config)
    assert verdict.passed and verdict.reasons == () and not verdict.dirty_allowed


REFUSALS = {
    "eval_failed": (
        lambda lin: {"eval_gate": dataclasses.replace(lin.eval_gate, passed=False, reasons=("math accuracy 0.1 < 0.5",))},
        "evaluation gate failed \\(math accuracy 0.1 < 0.5\\)",
    ),
    "eval_without_metrics": (lambda lin: {"eval_gate": EvalGate(passed=True)}, "recorded no metrics"),
    "stage_gate_failed": (
        lambda lin: {"stages": replace_stage(lin, "migrate", gates={"parity_gate": "failed"})},
        "stage migrate recorded parity_gate=failed",
    ),
    "no_contracts": (lambda lin: {"contracts": ()}, "no data-contract results"),
    "unbalanced_table": (
        lambda lin: {"contracts": (ContractTable(stage="curate", table="sft", rows_in=10, rows_kept=7, rows_quarantined=2),)},
        "curate/sft: rows_in 10 != kept 7 \\+ quarantined 2",
    ),
    "suite_failed": (
        lambda lin: {"suites": (SuiteResult(stage="curate", suite="ling26.eval", success=False, evaluated=5, failed=("unique prompt_id",)),)},
        "suite ling26.eval \\(curate\\) failed: unique prompt_id",
    ),
    "no_parent_run": (lambda lin: {"parent_run_id": ""}, "no MLflow pipeline"),
    "no_tracking_uri": (lambda lin: {"tracking_uri": ""}, "no MLflow tracking URI"),
    "no_git_sha": (lambda lin: {"git_sha": "unknown"}, "no git commit"),
    "missing_stage": (lambda lin: {"stages": lin.stages[:-1]}, "no run of stage evaluate"),
    "stage_without_run_id": (lambda lin: {"stages": replace_stage(lin, "pretrain", run_id="")}, "stage pretrain has no MLflow run id"),
    "stage_without_dvc": (lambda lin: {"stages": replace_stage(lin, "curate", outputs={})}, "stage curate .* has no DVC output hashes"),
    "stage_without_git": (lambda lin: {"stages": replace_stage(lin, "migrate", git_sha="")}, "stage migrate .* has no git commit"),
    "dirty_tree": (lambda lin: {"git_dirty": True}, "dirty"),
    "dirty_stage": (lambda lin: {"stages": replace_stage(lin, "post_train", git_dirty=True)}, "dirty"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_problem_is_refused_by_name(lineage, config, case):
    change, message = REFUSALS[case]
    broken = dataclasses.replace(lineage, **change(lineage))
    verdict = check_release(broken, config)
    assert not verdict.passed and len(verdict.reasons) == 1, verdict.reasons
    with pytest.raises(PublishRefused, match=message):
        publish_release(
            checkpoint="unused", lineage=broken, config=config, run_id="r", registered_model="m", work_dir="unused"
        )


def test_every_reason_is_named_at_once(lineage, config):
    broken = dataclasses.replace(
        lineage,
        eval_gate=dataclasses.replace(lineage.eval_gate, passed=False),
        contracts=(),
        git_sha="",
        git_dirty=True,
        stages=replace_stage(lineage, "curate", outputs={}),
    )
    with pytest.raises(PublishRefused) as err:
        publish_release(
            checkpoint="unused", lineage=broken, config=config, run_id="r", registered_model="m", work_dir="unused"
        )
    assert len(err.value.reasons) == 5
    for reason in err.value.reasons:
        assert reason in str(err.value)


def test_dirty_tree_passes_only_when_allowed_and_says_so(lineage, config):
    dirty = dataclasses.replace(lineage, git_dirty=True)
    assert not check_release(dirty, config).passed
    verdict = check_release(dirty, dataclasses.replace(config, allow_dirty=True))
    assert verdict.passed and verdict.dirty_allowed
    assert not check_release(lineage, dataclasses.replace(config, allow_dirty=True)).dirty_allowed


def test_unversioned_outputs_pass_only_when_allowed_and_the_card_says_so(lineage, config, checkpoint, tmp_path):
    from publishing import build_hf_folder
    from publishing.card import render_card

    stages = tuple(dataclasses.replace(s, outputs={}) if s.stage == "pretrain" else s for s in lineage.stages)
    unversioned = dataclasses.replace(lineage, stages=stages)
    refused = check_release(unversioned, config)
    assert not refused.passed and any("pretrain" in r and "allow_unversioned" in r for r in refused.reasons)
    allowed = check_release(unversioned, dataclasses.replace(config, allow_unversioned=True))
    assert allowed.passed and allowed.unversioned_allowed
    assert not check_release(lineage, dataclasses.replace(config, allow_unversioned=True)).unversioned_allowed
    folder = build_hf_folder(checkpoint, tmp_path / "hf", max_shard_bytes=config.max_shard_bytes, max_new_tokens=8)
    card = render_card(
        lineage=unversioned, verdict=allowed, folder=folder, config=config, publish_run_id="r", registered_model="m"
    )
    assert "versioned by DVC: **no** (allowed by `allow_unversioned`" in str(card)


def test_refusal_happens_before_any_side_effect(checkpoint, lineage, config, tracking_uri, publish_run, tmp_path):
    import mlflow

    refused = dataclasses.replace(lineage, eval_gate=dataclasses.replace(lineage.eval_gate, passed=False))
    with pytest.raises(PublishRefused):
        publish_release(
            checkpoint=checkpoint,
            lineage=refused,
            config=config,
            run_id=publish_run,
            registered_model="ling26-tiny",
            work_dir=tmp_path / "work",
        )
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert client.search_registered_models() == []
    assert client.list_artifacts(publish_run) == []
    assert not (tmp_path / "work").exists() and not (tmp_path / "dry_run").exists()
