"""Frozen, keyword-only config dataclasses per component and the named scale profiles."""

from configs.base import ConfigError, config_hash, flatten, from_dict, to_dict, to_json
from configs.data import ENVIRONMENT_FAMILIES, CurateConfig, EnvironmentsConfig
from configs.model import ModelConfig
from configs.pipeline import PROFILES, LineageConfig, PipelineConfig, cache_version, resolve

__all__ = [
    "ENVIRONMENT_FAMILIES",
    "PROFILES",
    "ConfigError",
    "CurateConfig",
    "EnvironmentsConfig",
    "LineageConfig",
    "ModelConfig",
    "PipelineConfig",
    "cache_version",
    "config_hash",
    "flatten",
    "from_dict",
    "resolve",
    "to_dict",
    "to_json",
]
