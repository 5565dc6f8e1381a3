"""Fixtures of the migration-stage tests: the tiny world of ``migrate_world`` built once per session, and one
migration run over it that several tests read."""

from types import SimpleNamespace

import pytest
import torch
from migrate_world import migrate_config, pipeline_config, train_base, write_curated

# Tiny shapes gain nothing from intra-op threads; on a shared 2-core machine spinning threads cost ~100x.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    cfg = pipeline_config()
    curated = tmp_path_factory.mktemp("curated")
    base = tmp_path_factory.mktemp("pretrain")
    write_curated(cfg, curated)
    train_base(cfg, curated, base)
    return SimpleNamespace(cfg=cfg, curated=curated, base=base)


@pytest.fixture(scope="session")
def passed_run(world, tmp_path_factory):
    """One migration with a margin no model misses; everything it logged."""
    from training.migrate.run import run_migrate

    mcfg = migrate_config(parity_margin_nats=100.0)
    out_dir = tmp_path_factory.mktemp("migrate")
    root = tmp_path_factory.mktemp("migrate-checkpoints")
    logged = []
    metrics = run_migrate(
        world.cfg,
        mcfg,
        world.curated,
        world.base,
        out_dir,
        checkpoint_root=root,
        on_log=lambda name, step, m: logged.append((name, step, dict(m))),
    )
    return SimpleNamespace(mcfg=mcfg, out_dir=out_dir, root=root, metrics=metrics, logged=logged)
