"""PublishConfig loads strictly like every config, and has no place for a token."""

import dataclasses

import pytest

from configs.base import ConfigError, from_dict, to_dict
from publishing import PublishConfig


def test_loads_strictly_and_round_trips():
    cfg = from_dict(PublishConfig, {"mode": "hub", "tags": ["a", "b"], "endpoint": "http://127.0.0.1:1"})
    assert cfg.mode == "hub" and cfg.tags == ("a", "b") and cfg.dry_run_dir is None
    assert from_dict(PublishConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="mode"):
        from_dict(PublishConfig, {"mode": "upload"})
    with pytest.raises(ConfigError, match="hf_token"):
        from_dict(PublishConfig, {"hf_token": "hf_x"})


def test_is_frozen_keyword_only_and_token_free():
    with pytest.raises(TypeError):
        PublishConfig("ling26/x")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PublishConfig().mode = "hub"  # type: ignore[misc]
    assert {f.name for f in dataclasses.fields(PublishConfig)}.isdisjoint({"token", "hf_token", "api_token"})
