"""One stage abstraction. A stage is declared once, as a :class:`Stage`: its name, the upstream stages whose
output folders it reads, the library call that does the work (``body``), and the command-line options it
takes. From that one declaration come

- the Flyte task body (:func:`run_flyte_stage`): config parsed, nested MLflow run opened, the body run,
  its Deck shown, outputs versioned with DVC, the report returned;
- the CLI entry point ``python -m tasks <stage>`` (what ``dvc repro`` runs; :mod:`tasks.__main__`);
- the report skeleton every stage returns: ``{stage, mlflow_run_id, dvc, summary_metrics}``.

A stage's own module says only what is particular to it: the declaration, its typed Flyte signature (Flyte
reads types from the function, so each stage spells its inputs out in a few lines), and a body
``(StageContext) -> StageResult`` that calls libraries and records what they return.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from flytekit.types.directory import FlyteDirectory

from lineage.refusal import StageRefused

if TYPE_CHECKING:
    from configs import PipelineConfig


class StageOutputs(NamedTuple):
    """What every stage task returns: its output folder and its report (JSON)."""

    out: FlyteDirectory
    report_json: str


@dataclass(frozen=True, kw_only=True)
class CliOption:
    """A stage-specific command-line option; its value reaches the body as ``ctx.options[dest]``."""

    flag: str
    help: str
    default: str = ""
    choices: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


@dataclass(frozen=True, kw_only=True)
class StageContext:
    """What a stage body receives."""

    cfg: PipelineConfig
    run: Any  # lineage.runs.StageRun (a no-op stand-in on ranks > 0)
    out_dir: Path
    inputs: Mapping[str, Path]  # upstream stage name -> its output folder
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What a stage body returns: the numbers the pipeline summary shows, its Deck, one line for the CLI."""

    summary_metrics: Mapping[str, float]
    deck_html: str
    message: str


__all__ = ["CliOption", "Stage", "StageContext", "StageOutputs", "StageRefused", "StageResult", "run_flyte_stage"]


@dataclass(frozen=True, kw_only=True)
class Stage:
    name: str
    doc: str
    inputs: tuple[str, ...]
    body: str  # "module:function"; imported when the stage runs, so declaring a stage stays cheap
    options: tuple[CliOption, ...] = ()
    # Ranks > 0 of a multi-process task run this instead ("module:function" taking (cfg, inputs)); None
    # means the stage runs on one process only.
    worker_body: str | None = None

    def resolve(self, dotted: str) -> Callable[..., Any]:
        module, _, function = dotted.partition(":")
        return getattr(importlib.import_module(module), function)


def execute(
    stage: Stage,
    cfg: PipelineConfig,
    parent_run_id: str | None,
    inputs: Mapping[str, Path],
    options: Mapping[str, str],
) -> tuple[dict[str, Any], StageResult | None]:
    """Run ``stage`` inside its MLflow run and version its outputs; returns (report, result).

    On a rank > 0 the worker body runs and there is neither report nor result: rank 0 alone records."""
    from lineage.models import log_checkpoint_model
    from tasks.common import is_main_process, output_dir, version_outputs
    from tasks.common import stage as stage_run

    missing = [name for name, path in inputs.items() if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(
            f"{stage.name}: upstream output {', '.join(str(inputs[m]) for m in missing)} does not exist; "
            f"run the stages before it first (make run, or dvc repro {stage.name})"
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and stage.worker_body is None:
        # Otherwise ranks > 0 would return at once and rank 0 wait forever in its engine's first collective.
        raise RuntimeError(
            f"{stage.name} runs on one process only (its Stage declares no worker_body) but was started on "
            f"{world_size}: give it cluster.{stage.name}.nnodes = nproc_per_node = 1, or a worker body"
        )
    if not is_main_process():
        if stage.worker_body:
            stage.resolve(stage.worker_body)(cfg, inputs)
        return {}, None
    out_dir = output_dir(stage.name)
    with stage_run(stage.name, cfg, parent_run_id) as run:
        ctx = StageContext(cfg=cfg, run=run, out_dir=out_dir, inputs=dict(inputs), options=dict(options))
        result = stage.resolve(stage.body)(ctx)
        # The Deck as an artifact too: a local Flyte run writes Decks to a temporary folder it never names.
        run.log_text(result.deck_html, f"deck/{stage.name}.html")
        hashes = version_outputs(stage.name, cfg, run)
        log_checkpoint_model(
            run.run_id, stage.name, out_dir / "checkpoint", dvc_hashes=hashes, metrics=result.summary_metrics
        )
        report = {
            "stage": stage.name,
            "mlflow_run_id": run.run_id,
            "dvc": hashes,
            "summary_metrics": dict(result.summary_metrics),
        }
    return report, result


def run_flyte_stage(
    stage: Stage,
    config_json: str,
    parent_run_id: str,
    inputs: Mapping[str, FlyteDirectory],
    options: Mapping[str, str] | None = None,
) -> StageOutputs:
    """The body of every stage's Flyte task."""
    from flytekit import Deck

    from tasks.common import load_config, output_dir

    cfg = load_config(config_json)
    local = {name: Path(directory.download()) for name, directory in inputs.items()}
    report, result = execute(stage, cfg, parent_run_id, local, options or {})
    if result is not None:
        Deck(stage.name, result.deck_html)
    _leave_launched_world()
    return StageOutputs(out=FlyteDirectory(str(output_dir(stage.name))), report_json=json.dumps(report, sort_keys=True))


def _leave_launched_world() -> None:
    """Workers of a launcher end with ``destroy_process_group()``. Unlike ``training.launch`` they cannot
    ``os._exit`` afterwards: Elastic still has to carry their return value to its agent. A world of one
    that DeepSpeed started inside a plain process stays, for the stages after this one."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from training.launch import leave_process_group

        leave_process_group()
