import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import PROFILES, ConfigError, PipelineConfig, config_hash, from_dict, resolve, to_dict
from configs.base import apply_overrides, parse_overrides
from configs.pipeline import cache_version


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_builds_and_round_trips(name):
    cfg = PROFILES[name]()
    assert cfg.profile == name
    again = from_dict(PipelineConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)


def test_configs_are_frozen_and_keyword_only():
    cfg = resolve("tiny_cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        PipelineConfig("tiny_cpu")  # type: ignore[misc]


def test_paper_profiles_carry_paper_shapes():
    flash, one_t = resolve("ling26_flash").model, resolve("ling26_1t").model
    assert flash.layer_types.count("full_attention") == 4 and flash.num_hidden_layers == 32
    assert one_t.layer_types.count("full_attention") == 10 and one_t.num_hidden_layers == 80
    assert one_t.num_experts == 256 and one_t.num_experts_per_tok == 8 and one_t.routed_scaling_factor == 2.5
    assert (one_t.kv_lora_rank, one_t.qk_rope_head_dim, one_t.q_lora_rank) == (512, 64, 1536)


def test_layer_types_follow_the_official_rule():
    tiny = resolve("tiny_cpu", {"model.num_hidden_layers": 6}).model
    # group size 4: layer 3 closes a group; layers 4, 5 are an incomplete trailing group -> softmax.
    assert tiny.layer_types == ("linear_attention",) * 3 + ("full_attention",) * 3


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key curate\.no_such_key"):
        resolve("tiny_cpu", "curate.no_such_key=3")
    with pytest.raises(ConfigError, match=r"unknown config key model\.hiden_size"):
        from_dict(PipelineConfig, {"model": {"hiden_size": 3}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"curate\.seq_len: expected int, got str"):
        resolve("tiny_cpu", {"curate": {"seq_len": "long"}})
    with pytest.raises(ConfigError, match=r"seed: expected int, got bool"):
        resolve("tiny_cpu", {"seed": True})


def test_cross_field_validation():
    with pytest.raises(ConfigError, match=r"must equal model\.vocab_size"):
        resolve("tiny_cpu", "curate.vocab_size=2048")
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        resolve("tiny_cpu", "model.num_key_value_heads=3")


def test_unknown_profile_and_missing_file():
    with pytest.raises(ConfigError, match="unknown profile"):
        resolve("huge")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve("tiny_cpu", config_file="/nonexistent/config.yaml")


def test_yaml_file_then_overrides(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("seed: 7\ncurate:\n  seq_len: 64\n")
    cfg = resolve("tiny_cpu", "curate.seq_len=32", config_file=str(file))
    assert cfg.seed == 7 and cfg.curate.seq_len == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve("tiny_cpu", config_file=str(bad))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("seed=3 curate.seq_len=64", {"seed": 3, "curate.seq_len": 64}),
        ("{curate: {seq_len: 64}}", {"curate.seq_len": 64}),
        ('{"seed": 5}', {"seed": 5}),
        ("", {}),
    ],
)
def test_override_syntaxes(text, expected):
    assert parse_overrides(text) == expected


def test_malformed_override():
    with pytest.raises(ConfigError):
        parse_overrides(["no-equals-sign"])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), seq_len=st.integers(8, 4096))
def test_hash_is_a_function_of_values(seed, seq_len):
    base = resolve("tiny_cpu")
    a = apply_overrides(base, {"seed": seed, "curate.seq_len": seq_len})
    b = apply_overrides(base, {"curate.seq_len": seq_len, "seed": seed})
    assert config_hash(a) == config_hash(b)
    assert (config_hash(a) == config_hash(base)) == (a == base)


def test_cache_version_is_stable_and_schema_based():
    assert cache_version() == cache_version()
    assert cache_version().startswith("schema-")
