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
    with pytest.raises(ConfigError, match=r"curate\.shard_tokens: expected int, got str"):
        resolve("tiny_cpu", {"curate": {"shard_tokens": "long"}})
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
    file.write_text("seed: 7\ncurate:\n  shard_tokens: 64\n")
    cfg = resolve("tiny_cpu", "curate.shard_tokens=32", config_file=str(file))
    assert cfg.seed == 7 and cfg.curate.shard_tokens == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve("tiny_cpu", config_file=str(bad))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("seed=3 curate.shard_tokens=64", {"seed": 3, "curate.shard_tokens": 64}),
        ("{curate: {shard_tokens: 64}}", {"curate.shard_tokens": 64}),
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
@given(seed=st.integers(0, 2**31), shard_tokens=st.integers(8, 4096))
def test_hash_is_a_function_of_values(seed, shard_tokens):
    base = resolve("tiny_cpu")
    a = apply_overrides(base, {"seed": seed, "curate.shard_tokens": shard_tokens})
    b = apply_overrides(base, {"curate.shard_tokens": shard_tokens, "seed": seed})
    assert config_hash(a) == config_hash(b)
    assert (config_hash(a) == config_hash(base)) == (a == base)


def test_cache_version_is_stable_and_schema_based():
    assert cache_version() == cache_version()
    assert cache_version().startswith("schema-")


@pytest.mark.parametrize("name", ["small_gpu", "ling26_flash", "ling26_1t"])
def test_scale_profiles_spell_out_their_training(name):
    tiny, cfg = resolve("tiny_cpu"), resolve(name)
    for section in ("pretrain", "migrate", "post_train"):
        assert getattr(cfg, section).engine.precision == "bf16", section
        if name != "small_gpu":  # one GPU has nothing to shard
            assert getattr(cfg, section).engine.zero_stage == 3, section
    pre, tpre = cfg.pretrain, tiny.pretrain
    assert pre.loop.seq_len >= 2048 and pre.loop.max_steps > 10 * tpre.loop.max_steps
    assert pre.optim.lr < tpre.optim.lr / 4 and pre.optim.warmup_steps > tpre.optim.warmup_steps
    tokens_per_step = pre.loop.micro_batch_size * pre.loop.grad_accum_steps * pre.loop.seq_len
    assert tokens_per_step > tpre.loop.micro_batch_size * tpre.loop.seq_len
    assert pre.optim.merge_last_k <= pre.loop.keep_checkpoints
    mig = cfg.migrate
    assert mig.seq_len == pre.loop.seq_len and mig.grad_accum_steps == pre.loop.grad_accum_steps
    phases = ("linear_warmup", "partial_training", "mla_warmup", "continued_pretraining")
    steps = [getattr(mig, p).steps for p in phases]
    # The paper's split (METHODS §3.3): the migration phases are a few percent, continued pre-training the bulk.
    assert sum(steps[:3]) < 0.06 * steps[3] and all(getattr(mig, p).lr < 1e-3 for p in phases)
    post, tpost = cfg.post_train, tiny.post_train
    for phase in ("sft", "rl", "preference"):
        assert getattr(post, phase).optim.lr < getattr(tpost, phase).optim.lr / 10, phase
    assert post.sft.seq_len > tpost.sft.seq_len and post.rl.prompts_per_step > tpost.rl.prompts_per_step
    assert post.rl.max_new_tokens > tpost.rl.max_new_tokens


def test_paper_profiles_carry_the_ling2_pretraining_recipe():
    flash, one_t = resolve("ling26_flash").pretrain, resolve("ling26_1t").pretrain
    # METHODS §1.1: peak lr 2.61e-4 / 1.86e-4, batch 8,352 / 18,144 sequences of 4K, 2,000 warmup steps, 20 T tokens.
    assert (flash.optim.lr, one_t.optim.lr) == (2.61e-4, 1.86e-4)
    for pre, batch in ((flash, 8352), (one_t, 18144)):
        assert pre.optim.warmup_steps == 2000 and pre.loop.seq_len == 4096
        assert pre.loop.max_steps * batch * 4096 == pytest.approx(20e12, rel=1e-4)
        assert pre.optim.merge_last_k == 32


def test_post_train_sequence_lengths_are_checked_against_the_model():
    with pytest.raises(ConfigError, match=r"post_train\.sft\.seq_len"):
        resolve("tiny_cpu", "post_train.sft.seq_len=4096")
    with pytest.raises(ConfigError, match=r"post_train\.rl\.clip_low"):
        resolve("tiny_cpu", "post_train.rl.clip_low=1.5")
    asym = resolve(
        "tiny_cpu", "post_train.rl.level=sequence post_train.rl.clip_low=0.0003 post_train.rl.clip_high=0.0004"
    )
    assert (asym.post_train.rl.clip_low, asym.post_train.rl.clip_high) == (3e-4, 4e-4)  # GSPO's band
