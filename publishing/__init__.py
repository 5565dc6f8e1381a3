"""The library behind the publish stage: checkpoint -> gated, lineage-carrying release in the MLflow Model
Registry and on the Hugging Face Hub (or a local dry-run folder laid out like the Hub repository).

``publish_release`` composes the modules, one job each: ``gate`` (refuse, naming every reason), ``hf_folder``
(sharded safetensors + index, config, modeling files, tokenizer, generation config), ``card`` (README.md with
Hub metadata and the lineage), ``registry`` (MLflow version, tags, aliases), ``hub`` (one guarded commit, or the
dry run). ``collect`` reads a ``ReleaseLineage`` from the MLflow store the stages wrote.
"""

from configs.publish import PublishConfig
from publishing.collect import collect_lineage, eval_metrics_from_summary, stage_run_ids_from_reports
from publishing.gate import GateVerdict, PublishRefused, check_release, require_release
from publishing.hf_folder import CheckpointError, HfFolder, build_hf_folder, weights_digest
from publishing.hub import HubConfigError, HubResult
from publishing.provenance import ContractTable, EvalGate, EvalMetric, ReleaseLineage, StageRecord, SuiteResult
from publishing.registry import CANDIDATE, CHAMPION, RegisteredVersion
from publishing.release import ReleaseResult, publish_release

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "CheckpointError",
    "ContractTable",
    "EvalGate",
    "EvalMetric",
    "GateVerdict",
    "HfFolder",
    "HubConfigError",
    "HubResult",
    "PublishConfig",
    "PublishRefused",
    "RegisteredVersion",
    "ReleaseLineage",
    "ReleaseResult",
    "StageRecord",
    "SuiteResult",
    "build_hf_folder",
    "check_release",
    "collect_lineage",
    "eval_metrics_from_summary",
    "publish_release",
    "require_release",
    "stage_run_ids_from_reports",
    "weights_digest",
]
