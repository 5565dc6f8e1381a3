"""The curation stage: environments + local text -> tokenizer, token shards and contract-checked tables.

On Flyte the stage task is curation's last reduce: ``workflows.curation`` runs the per-document work before it
as ``map_task``s (``tasks.curate.fanout``) and hands it the folders they wrote. ``python -m tasks curate``
(``dvc repro``) runs the same phases in one process.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from flytekit import task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

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
def curate(
    config_json: str,
    parent_run_id: str,
    extra_documents: str,
    prepared: FlyteDirectory,
    decided: FlyteDirectory,
    tokens: list[FlyteFile],
) -> StageOutputs:
    """Environments + local text -> tokenizer, token shards, SFT / candidate / RL / eval tables (contract-checked)."""
    # The token files of the map, gathered in shard order into one folder the stage body reads.
    gathered = Path(tempfile.mkdtemp(prefix="ling26-curate-tokens-"))
    for i, file in enumerate(tokens):
        shutil.copyfile(file.download(), gathered / f"{i:05d}.pkl")
    options = {"extra_documents": extra_documents, "on_bad_rows": "quarantine"}
    inputs = {"prepared": prepared, "decided": decided, "tokens": FlyteDirectory(str(gathered))}
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs=inputs, options=options)
