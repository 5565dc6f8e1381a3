"""The migration stage's config lives in ``configs/migrate.py`` (section ``migrate`` of PipelineConfig)."""

from __future__ import annotations

from typing import Any

from configs.migrate import MigrateConfig, MigratePhaseConfig

__all__ = ["MigrateConfig", "MigratePhaseConfig", "migrate_config"]


def migrate_config(cfg: Any) -> MigrateConfig:
    """The pipeline config's ``migrate`` section."""
    return cfg.migrate
