"""The fanned-out half of the curation stage on Flyte: prepare, the two per-shard maps and the decision between
them (``corpus.curation``'s phases, one task each). ``tasks.curate.task.curate`` is the last reduce and the stage
itself (its MLflow run, contracts, DVC); ``workflows.curation`` wires them with ``map_task``.

The intermediate folders are handed from task to task as Flyte blobs and are not stage outputs: nothing but the
stage task writes ``data/curate``. All share the stage's cache version (config schema + curation's code).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple

from flytekit import Cache, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from tasks.common import stage_cache

CACHE = Cache(version=stage_cache("curate").version)


class Sharded(NamedTuple):
    """A phase's folder and the shard numbers its map runs over."""

    work: FlyteDirectory
    shards: list[int]


def _scratch(prefix: str) -> Path:
    """A fresh folder in the execution's working directory (Flyte uploads what a task returns from it)."""
    from flytekit import current_context

    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=current_context().working_directory))


@task(cache=CACHE)
def prepare_curation(config_json: str, extra_documents: str, docs_per_shard: int) -> Sharded:
    """Environment tables, prompt screening, eval index; the raw documents cut into shards."""
    from corpus.curation import prepare
    from environments.sandbox import sandbox_isolation
    from tasks.common import load_config, show_progress_logs

    show_progress_logs()
    cfg = load_config(config_json)
    # Candidate responses are verified in the code sandbox here: refuse before any work where it cannot run.
    sandbox_isolation(allow_weak_isolation=cfg.environments.sandbox_allow_weak_isolation)
    work = _scratch("prepared")
    shards = prepare(cfg, work, extra_documents=extra_documents or None, docs_per_shard=docs_per_shard)
    return Sharded(work=FlyteDirectory(str(work)), shards=list(range(shards)))


@task(cache=CACHE)
def analyse_curation_shard(config_json: str, prepared: FlyteDirectory, shard: int) -> FlyteFile:
    """Map item of the first pass: per-document intake verdict, dedup key, MinHash signature, eval n-gram."""
    from corpus.curation import analyse_shard
    from tasks.common import load_config

    out = _scratch("analysed") / f"{shard:05d}.pkl"
    return FlyteFile(str(analyse_shard(load_config(config_json), Path(prepared.download()), shard, out)))


@task(cache=CACHE)
def decide_curation(
    config_json: str, prepared: FlyteDirectory, analysed: list[FlyteFile], docs_per_shard: int
) -> Sharded:
    """The first reduce: every global decision in document order, and the tokenizer."""
    from corpus.curation import decide
    from tasks.common import load_config, show_progress_logs

    show_progress_logs()
    work = _scratch("decided")
    shards = decide(
        load_config(config_json),
        Path(prepared.download()),
        [Path(f.download()) for f in analysed],
        work,
        docs_per_shard=docs_per_shard,
    )
    return Sharded(work=FlyteDirectory(str(work)), shards=list(range(shards)))


@task(cache=CACHE)
def tokenize_curation_shard(decided: FlyteDirectory, shard: int) -> FlyteFile:
    """Map item of the second pass: token ids of one shard of the kept documents."""
    from corpus.curation import tokenize_shard

    out = _scratch("tokens") / f"{shard:05d}.pkl"
    return FlyteFile(str(tokenize_shard(Path(decided.download()), shard, out)))
