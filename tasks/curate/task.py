"""The curation stage as a Flyte task: parse config, run the library, log lineage, return typed outputs."""

from __future__ import annotations

from typing import NamedTuple

from flytekit import Deck, task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache


class CurateOutputs(NamedTuple):
    curated: FlyteDirectory
    report_json: str


@task(cache=stage_cache("curate"), enable_deck=True)
def curate(config_json: str, parent_run_id: str, extra_documents: str = "") -> CurateOutputs:
    """Environments + local text -> tokenizer, token shards, SFT / candidate / RL / eval tables (contract-checked)."""
    import json

    from tasks.common import load_config, output_dir, stage, version_outputs
    from tasks.curate.report import record_curation
    from tasks.curate.stage import run_curation

    cfg = load_config(config_json)
    out_dir = output_dir("curate")
    with stage("curate", cfg, parent_run_id) as run:
        report = run_curation(cfg, out_dir, extra_documents=extra_documents or None)
        Deck("contracts", record_curation(run, report, out_dir, extra_documents=extra_documents or None))
        report["dvc"] = version_outputs("curate", cfg, run)
        report["stage"] = "curate"
        report["mlflow_run_id"] = run.run_id
        report["summary_metrics"] = {
            "tokens_train": report["tokens"]["train"],
            "sft_examples": report["sft_examples"],
            "rows_quarantined": sum(t["rows_quarantined"] for t in report["tables"].values()),
        }
    return CurateOutputs(curated=FlyteDirectory(str(out_dir)), report_json=json.dumps(report, sort_keys=True))
