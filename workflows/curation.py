"""Curation fanned out over shards: the per-document work as Flyte ``map_task``s, so a cluster spreads it over
pods, and the curate stage task as the last reduce.

    prepare_curation ─► map(analyse_curation_shard) ─► decide_curation ─► map(tokenize_curation_shard) ─► curate

Two maps because tokenization needs the tokenizer, and the tokenizer is trained on the documents that survive
the global decisions (duplicates across shards, contamination, the held-out split). Run locally, flytekit runs
each map in this process, and the outputs equal ``python -m tasks curate``'s byte for byte
(``tests/curate/test_fanout.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from flytekit import map_task, workflow

from tasks.curate.fanout import analyse_curation_shard, decide_curation, prepare_curation, tokenize_curation_shard
from tasks.curate.task import curate
from tasks.stage import StageOutputs

# Documents per map item (corpus.shard_work.DOCS_PER_SHARD; a test keeps them equal). Not a config field: the
# shard size changes where the work runs, never what curation writes.
DOCS_PER_SHARD = 1000

CURATION_TASKS = {
    "prepare_curation": prepare_curation,
    "analyse_curation_shard": analyse_curation_shard,
    "decide_curation": decide_curation,
    "tokenize_curation_shard": tokenize_curation_shard,
    "curate": curate,
}


def curation_graph(
    t: Mapping[str, Any], *, config_json: Any, parent_run_id: Any, extra_documents: Any, docs_per_shard: Any
) -> Any:
    """The curation nodes inside a workflow being compiled, with the tasks of :data:`CURATION_TASKS`; ``t`` may
    replace any of them by name (a profile's cluster variants). Returns the stage's (out, report_json)."""
    t = {**CURATION_TASKS, **t}
    plan = t["prepare_curation"](
        config_json=config_json, extra_documents=extra_documents, docs_per_shard=docs_per_shard
    )
    analysed = map_task(functools.partial(t["analyse_curation_shard"], config_json=config_json, prepared=plan.work))(
        shard=plan.shards
    )
    decided = t["decide_curation"](
        config_json=config_json, prepared=plan.work, analysed=analysed, docs_per_shard=docs_per_shard
    )
    tokens = map_task(functools.partial(t["tokenize_curation_shard"], decided=decided.work))(shard=decided.shards)
    return t["curate"](
        config_json=config_json,
        parent_run_id=parent_run_id,
        extra_documents=extra_documents,
        prepared=plan.work,
        decided=decided.work,
        tokens=tokens,
    )


@workflow
def curation(
    config_json: str, parent_run_id: str, extra_documents: str = "", docs_per_shard: int = DOCS_PER_SHARD
) -> StageOutputs:
    """The curate stage with its per-document work fanned out (see the module docstring)."""
    return curation_graph(
        {},
        config_json=config_json,
        parent_run_id=parent_run_id,
        extra_documents=extra_documents,
        docs_per_shard=docs_per_shard,
    )
