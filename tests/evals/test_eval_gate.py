"""The evaluation gate: every failing check named with its value, threshold and gap; a JSON verdict; and a
checkpoint degraded on purpose refused by thresholds its clean original passes."""

import json
import math

import pandas as pd
import pytest

from configs.evaluation import EvalGateConfig
from data_contracts.evaluation import ComparisonRow
from evals.gate import GateFailed, enforce_gate, gate_verdict, write_gate_verdict


def table(rows: dict[str, dict[tuple[str, str], float]]) -> pd.DataFrame:
    """checkpoint -> {(family, metric): value}; a NaN per-success metric gets n = 0 as the contract wants."""
    frame = pd.DataFrame(
        [
            {"checkpoint": name, "family": family, "metric": metric, "value": float(value),
             "n": 0 if isinstance(value, float) and math.isnan(value) else 10}
            for name, values in rows.items()
            for (family, metric), value in values.items()
        ]
    )  # fmt: skip
    return ComparisonRow.validate(frame)


GOOD = {
    ("math", "accuracy"): 0.8, ("code", "accuracy"): 0.6, ("all", "accuracy"): 0.7, ("all", "format_rate"): 0.95,
    ("all", "tokens_per_correct"): 40.0, ("agentic", "agentic_success"): 0.5, ("all", "heldout_loss"): 2.0,
}  # fmt: skip


def test_a_checkpoint_meeting_every_threshold_passes_and_the_verdict_is_strict_json(tmp_path):
    cfg = EvalGateConfig(
        min_accuracy={"math": 0.5, "all": 0.7},
        min_format_rate=0.9,
        max_tokens_per_correct=50.0,
        min_agentic_success=0.5,
    )
    verdict = enforce_gate(gate_verdict(table({"sft": GOOD}), cfg, checkpoint="sft"))
    assert verdict.passed and not verdict.failures
    assert {(c.metric, c.family) for c in verdict.checks} == {
        ("accuracy", "math"), ("accuracy", "all"), ("format_rate", "all"), ("tokens_per_correct", "all"),
        ("agentic_success", "agentic"),
    }  # fmt: skip
    by_key = {(c.metric, c.family): c for c in verdict.checks}
    assert by_key["accuracy", "math"].gap == pytest.approx(0.3) and by_key["tokens_per_correct", "all"].gap == 10.0
    # A minimum met exactly passes, with a zero gap.
    assert by_key["accuracy", "all"].passed and by_key["accuracy", "all"].gap == 0.0
    path = write_gate_verdict(verdict, tmp_path)
    assert path.name == "gate_verdict.json"
    data = json.loads(path.read_text())
    assert data["passed"] is True and data["reasons"] == [] and len(data["checks"]) == 5
    assert {"metric", "family", "value", "threshold", "bound", "gap", "passed", "detail"} == set(data["checks"][0])


def test_each_failing_metric_is_named_with_value_threshold_and_gap():
    cfg = EvalGateConfig(min_accuracy={"math": 0.9, "code": 0.5}, max_tokens_per_correct=30.0)
    verdict = gate_verdict(table({"rl": GOOD}), cfg, checkpoint="rl")
    assert not verdict.passed
    with pytest.raises(GateFailed) as err:
        enforce_gate(verdict)
    message = str(err.value)
    assert "evaluation gate failed for 'rl': 2 of" in message
    assert "accuracy[math] = 0.8 < min 0.9 (short by 0.1)" in message
    assert "tokens_per_correct[all] = 40 > max 30 (short by 10)" in message
    assert "accuracy[code]" not in message  # 0.6 >= 0.5 passed
    assert err.value.verdict is verdict
    assert json.loads(json.dumps(verdict.to_dict(), allow_nan=False))["reasons"] == [c.detail for c in verdict.failures]


def test_an_undefined_or_unmeasured_value_fails_and_says_why():
    rows = {**GOOD, ("all", "tokens_per_correct"): math.nan}
    cfg = EvalGateConfig(min_accuracy={"search": 0.1}, max_tokens_per_correct=50.0)
    verdict = gate_verdict(table({"base": rows}), cfg, checkpoint="base")
    details = {c.metric: c.detail for c in verdict.failures}
    assert "undefined" in details["tokens_per_correct"]
    assert "accuracy[search] is not in the comparison table" in details["accuracy"]
    assert all(c.value is None and c.gap is None for c in verdict.failures)
    json.dumps(verdict.to_dict(), allow_nan=False)


def test_zero_minimums_of_families_not_evaluated_are_no_checks():
    verdict = gate_verdict(table({"base": GOOD}), EvalGateConfig(), checkpoint="base")
    assert verdict.passed
    assert {c.family for c in verdict.checks} == {"math", "code", "all"}


def test_regression_against_the_previous_checkpoint():
    worse = {**GOOD, ("math", "accuracy"): 0.55, ("all", "heldout_loss"): 2.3}
    cfg = EvalGateConfig(max_accuracy_regression=0.1, max_heldout_loss_regression=0.2)
    verdict = gate_verdict(table({"sft": GOOD, "rl": worse}), cfg, checkpoint="rl", previous="sft")
    failed = {(c.metric, c.family): c for c in verdict.failures}
    assert set(failed) == {("accuracy_drop", "math"), ("heldout_loss_rise", "all")}
    assert failed["accuracy_drop", "math"].value == pytest.approx(0.25)
    assert failed["accuracy_drop", "math"].gap == pytest.approx(-0.15)
    assert "heldout_loss_rise[all] = 0.3 > max 0.2 (short by 0.1)" in failed["heldout_loss_rise", "all"].detail
    # Without a previous checkpoint, regression thresholds have nothing to compare.
    assert gate_verdict(table({"rl": worse}), cfg, checkpoint="rl").passed


def test_an_unknown_checkpoint_is_refused():
    with pytest.raises(ValueError, match="'rl' has no rows"):
        gate_verdict(table({"sft": GOOD}), EvalGateConfig(), checkpoint="rl")


def test_noised_weights_are_refused_by_thresholds_the_clean_checkpoint_passes(comparison):
    """Thresholds set from the clean checkpoint's own numbers: it passes them; its noised copy does not,
    alone or against it."""
    clean = comparison.table[comparison.table["checkpoint"] == "memorised"].set_index(["family", "metric"])["value"]
    families = sorted({f for f, m in clean.index if m == "accuracy" and f != "agentic"})
    cfg = EvalGateConfig(
        min_accuracy={f: clean[f, "accuracy"] for f in families},
        max_tokens_per_correct=clean["all", "tokens_per_correct"] * 1.25,
        min_agentic_success=clean["agentic", "agentic_success"],
        max_accuracy_regression=0.05,
        max_heldout_loss_regression=0.1,
    )
    assert enforce_gate(gate_verdict(comparison.table, cfg, checkpoint="memorised")).passed
    with pytest.raises(GateFailed, match=r"accuracy\[all\] = [0-9.]+ < min 1"):
        enforce_gate(gate_verdict(comparison.table, cfg, checkpoint="noisy"))
    against = gate_verdict(comparison.table, cfg, checkpoint="noisy", previous="memorised")
    failed = {c.metric for c in against.failures}
    assert {"accuracy", "accuracy_drop", "heldout_loss_rise", "agentic_success"} <= failed
