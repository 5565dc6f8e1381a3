"""Post-training and distillation train, sample from and export one module in place, which ZeRO-3 would leave
holding shards: both refuse it before any work, naming the key and what to set instead."""

import dataclasses

import pytest

from configs.base import ConfigError
from configs.pipeline import ling26_flash, tiny_cpu
from training.distill.run import run_distill
from training.post_train.run import run_post_train


def with_engine(cfg, section: str, zero_stage: int):
    part = getattr(cfg, section)
    engine = dataclasses.replace(part.engine, backend="deepspeed", zero_stage=zero_stage)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(part, engine=engine)})


def test_post_train_refuses_zero3_before_reading_anything(tmp_path):
    cfg = with_engine(tiny_cpu(), "post_train", 3)
    with pytest.raises(ConfigError, match=r"post_train\.engine\.zero_stage=3 .*zero_stage=2"):
        run_post_train(cfg, tmp_path / "missing", tmp_path / "missing", tmp_path / "out")
    # ZeRO-2 gets past the check, to reading the (missing) tokenizer.
    with pytest.raises(Exception, match="No such file"):
        run_post_train(with_engine(tiny_cpu(), "post_train", 2), tmp_path / "missing", tmp_path / "missing", tmp_path)


def test_distill_refuses_zero3_before_reading_anything(tmp_path):
    cfg = with_engine(tiny_cpu(), "distill", 3)
    with pytest.raises(ConfigError, match=r"distill\.engine\.zero_stage=3"):
        run_distill(cfg, tmp_path / "missing", {}, tmp_path / "missing", tmp_path / "out")


def test_the_paper_profile_post_trains_at_zero3_which_the_stage_refuses_clearly(tmp_path):
    # The scale profile states the shapes the paper needs; until gathered ZeRO-3 post-training exists
    # (issue 13), running it stops at once with the message rather than exporting empty tensors.
    cfg = ling26_flash()
    assert cfg.post_train.engine.zero_stage == 3
    with pytest.raises(ConfigError, match="issue 13"):
        run_post_train(cfg, tmp_path, tmp_path, tmp_path)
