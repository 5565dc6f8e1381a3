"""The curation stage: environments + local text -> tokenizer, token shards and contract-checked tables."""

from __future__ import annotations

from flytekit import task

from tasks.common import stage_cache
from tasks.stage import CliOption, Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="curate",
    doc="Environments + local text -> tokenizer, token shards, SFT / candidate / RL / eval tables (contract-checked).",
    inputs=(),
    body="tasks.curate.report:run_recorded",
    options=(
        CliOption(flag="--extra-documents", help="JSONL or parquet of raw {doc_id, source, text} rows"),
        CliOption(
            flag="--on-bad-rows",
            default="quarantine",
            choices=("quarantine", "raise"),
            help="quarantine bad rows to quarantine.parquet (default) or stop at the first one, naming row and rule",
        ),
    ),
)


@task(cache=stage_cache("curate"), enable_deck=True)
def curate(config_json: str, parent_run_id: str, extra_documents: str = "") -> StageOutputs:
    """Environments + local text -> tokenizer, token shards, SFT / candidate / RL / eval tables (contract-checked)."""
    options = {"extra_documents": extra_documents, "on_bad_rows": "quarantine"}
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs={}, options=options)
