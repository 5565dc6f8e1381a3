"""MigrateConfig: the defaults are a valid tiny profile, it loads strictly, and bad values fail by name; the
parity verdict is the documented inequality."""

import dataclasses
import math

import pytest

from configs.base import ConfigError, from_dict, to_dict
from configs.migrate import MigrateConfig, MigratePhaseConfig
from evals.parity_gate import ParityGateFailed, parity_verdict
from training.migrate.phases import PHASES


def test_defaults_are_the_tiny_profile():
    cfg = MigrateConfig()
    assert sum(getattr(cfg, p).steps for p in PHASES) == 300
    assert (cfg.micro_batch_size, cfg.seq_len, cfg.kv_init, cfg.parity_margin_nats) == (32, 128, "replicate", 0.05)
    from configs import resolve

    assert resolve("tiny_cpu").migrate == cfg


def test_loads_strictly_and_round_trips():
    cfg = MigrateConfig()
    assert from_dict(MigrateConfig, to_dict(cfg)) == cfg
    changed = from_dict(MigrateConfig, {"linear_warmup": {"steps": 3, "lr": 1e-3}, "kv_init": "first_of_group"})
    assert changed.linear_warmup == MigratePhaseConfig(steps=3, lr=1e-3) and changed.kv_init == "first_of_group"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"linear_warmpu": {"steps": 1, "lr": 1.0}}, "unknown config key linear_warmpu"),
        ({"mla_warmup": {"steps": 1, "lr": 1.0, "decay": 2}}, "unknown config key mla_warmup.decay"),
        ({"kv_init": "zeros"}, "kv_init"),
        ({"continued_pretraining": {"steps": -1, "lr": 1e-3}}, ">= 0"),
        ({"partial_training": {"steps": 1, "lr": 0.0}}, "lr must be positive"),
        ({"keep_checkpoints": 2, "merge_last_k": 3}, "merge fewer checkpoints"),
        ({"heldout_windows": 0}, ">= 1"),
    ],
)
def test_bad_values_fail_by_name(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(MigrateConfig, data)


def test_parity_verdict():
    assert parity_verdict(2.0, 2.05, 0.05)["passed"]  # equality passes
    failed = parity_verdict(2.0, 2.0500001, 0.05)
    assert not failed["passed"] and failed["gap_nats"] == pytest.approx(0.0500001)
    assert parity_verdict(2.0, 1.5, -0.4)["passed"] and not parity_verdict(2.0, 1.7, -0.4)["passed"]
    assert not parity_verdict(2.0, math.nan, 100.0)["passed"]
    assert not parity_verdict(2.0, math.inf, 100.0)["passed"]
    err = ParityGateFailed(parity_verdict(2.0, 3.25, 0.05))
    assert "3.2500" in str(err) and "2.0000" in str(err) and "0.0500" in str(err)


def test_phase_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MigrateConfig().linear_warmup.steps = 3


def test_tiny_extension_is_eight_times_pretraining_within_the_positions():
    from configs import resolve

    cfg = resolve("tiny_cpu")
    ext = cfg.migrate.context_extension
    assert ext.max_seq_len >= 8 * cfg.pretrain.loop.seq_len and ext.max_seq_len <= cfg.model.max_position_embeddings
    assert ext.router_bias_update_rate == cfg.model.router_bias_update_rate / 10  # 1e-3 -> 1e-4 (METHODS §1.2)
    assert max(ext.retrieval_lengths) == ext.max_seq_len and max(cfg.evaluate.retrieval.lengths) >= ext.max_seq_len


@pytest.mark.parametrize("profile", ["ling26_flash", "ling26_1t"])
def test_paper_profiles_spell_out_the_papers_mid_training(profile):
    from configs import resolve

    cfg = resolve(profile)
    stages = cfg.migrate.context_extension.stages
    assert [s.seq_len for s in stages] == [32768, 32768, 262144]
    assert cfg.model.max_position_embeddings >= 262144
    # Tokens: sequences per step (the migration's global batch) x length x steps; 250 / 425 / 525 B = 1.2 T.
    per_step = {"ling26_flash": 8352, "ling26_1t": 18144}[profile]  # the batch in sequences (METHODS §1.1)
    tokens = [s.steps * s.seq_len * per_step for s in stages]
    for got, want in zip(tokens, (250e9, 425e9, 525e9), strict=True):
        assert got == pytest.approx(want, rel=0.01)
    assert all(s.lr == cfg.pretrain.optim.lr for s in stages)  # peak lr kept


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"migrate.context_extension.stages": [{"seq_len": 2048, "steps": 1, "lr": 1e-3}]},
         "migrate.context_extension.stages.*exceeds model.max_position_embeddings"),
        ({"migrate.context_extension.stages": [{"seq_len": 512, "steps": 1, "lr": 1e-3},
                                               {"seq_len": 256, "steps": 1, "lr": 1e-3}]}, "must not shorten"),
        ({"migrate.context_extension.stages": [{"seq_len": 512, "steps": 1, "lr": 1e-3,
                                                "long_document_fraction": 1.5}]}, "long_document_fraction"),
        ({"migrate.context_extension.yarn_beta_fast": 0.5}, "yarn_beta_fast must exceed"),
        ({"migrate.context_extension.stages": [{"seq_len": 512, "steps": 1}]}, "missing required config key"),
    ],
)  # fmt: skip
def test_extension_config_fails_by_name(overrides, match):
    from configs import resolve

    with pytest.raises(ConfigError, match=match):
        resolve("tiny_cpu", overrides)
