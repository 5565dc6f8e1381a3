"""Each stage's checkpoint as an MLflow logged model, so the UI's "Logged models" lists what every stage made,
with its metrics linked.

The weights stay where DVC versions them (``data/<stage>/checkpoint``): the logged model is an *external* one
(MLflow 3), a record that names the DVC path and hash instead of a second copy of the tensors in the artifact
store. The release's copy goes to the Model Registry through the publish stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_TYPE = "causal-lm-checkpoint"


def log_checkpoint_model(
    run_id: str, stage: str, checkpoint: Path, *, dvc_hashes: Mapping[str, str], metrics: Mapping[str, float]
) -> Any | None:
    """Record ``checkpoint`` (a stage's exported folder) as a logged model of ``run_id``; None if it has none."""
    import json

    import mlflow

    config_path = Path(checkpoint) / "config.json"
    if not config_path.exists():
        return None
    config = json.loads(config_path.read_text())
    model = mlflow.create_external_model(
        name=f"{stage}-checkpoint",
        source_run_id=run_id,
        model_type=MODEL_TYPE,
        tags={
            "ling26.stage": stage,
            "dvc.path": f"data/{stage}/checkpoint",
            "dvc.md5": dvc_hashes.get(f"data/{stage}", "not versioned (lineage.dvc=false)"),
        },
        params={
            "architecture": ",".join(config.get("architectures", [])),
            "num_hidden_layers": str(config.get("num_hidden_layers", "")),
            "hidden_size": str(config.get("hidden_size", "")),
        },
    )
    finite = {k: float(v) for k, v in metrics.items() if v == v}
    if finite:
        mlflow.log_metrics(finite, run_id=run_id, model_id=model.model_id)
    return model
