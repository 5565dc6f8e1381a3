"""The evaluation config: defaults and the scale profile are valid, per-family thresholds override by dotted
key, and impossible settings fail before any work with the key in the message."""

import pytest

from configs.base import ConfigError, apply_overrides, from_dict, parse_overrides, to_dict
from configs.evaluation import GATE_FAMILIES, EvalGateConfig, EvaluateConfig, scale_evaluate


def test_profiles_are_valid_and_round_trip():
    for cfg in (EvaluateConfig(), scale_evaluate()):
        assert from_dict(EvaluateConfig, to_dict(cfg)) == cfg
    assert set(EvaluateConfig().gate.min_accuracy) == set(GATE_FAMILIES)
    # The tiny gate asks for an overall floor only; per-family minimums are zero, so each can be overridden.
    tiny = EvaluateConfig().gate.min_accuracy
    assert tiny["all"] > 0 and not any(v for family, v in tiny.items() if family != "all")
    # The scale gate judges regressions tighter than the tiny one, whose eval is 60x smaller.
    assert scale_evaluate().gate.max_accuracy_regression < EvaluateConfig().gate.max_accuracy_regression


def test_a_family_threshold_overrides_by_dotted_key():
    cfg = apply_overrides(
        EvaluateConfig(), parse_overrides("gate.min_accuracy.math=0.4 gate.max_tokens_per_correct=60")
    )
    assert cfg.gate.min_accuracy["math"] == 0.4 and cfg.gate.min_accuracy["code"] == 0.0
    assert cfg.gate.max_tokens_per_correct == 60.0
    with pytest.raises(ConfigError, match=r"gate\.min_accuracy\.poetry"):
        apply_overrides(EvaluateConfig(), {"gate.min_accuracy.poetry": 0.5})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pass_k": [1, 16]}, "needs at least that many samples"),
        ({"pass_k": [0]}, "pass_k must be >= 1"),
        ({"temperature": 0.0}, "temperature must be > 0 for pass@k"),
        ({"retrieval": {"depths": [0.5, 1.5]}}, "depths must lie in"),
        ({"retrieval": {"lengths": [0]}}, "lengths must be positive"),
        ({"gate": {"min_accuracy": {"poetry": 0.5}}}, "unknown family 'poetry'"),
        ({"gate": {"min_format_rate": 1.5}}, "min_format_rate must be a rate"),
        ({"gate": {"max_accuracy_regression": -0.1}}, "max_accuracy_regression must be >= 0"),
        ({"lm_eval": {"limit": 0}}, "limit must be >= 1"),
    ],
)
def test_impossible_settings_fail_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(EvaluateConfig, overrides)


def test_greedy_only_evaluation_needs_no_temperature():
    assert EvaluateConfig(pass_k=(), temperature=0.0).pass_k == ()
    assert EvalGateConfig(min_accuracy={"all": 0.5}).min_accuracy == {"all": 0.5}
