"""Training library shared by every stage: engine (DeepSpeed ZeRO or torch), WSM schedule and merge, atomic
verified checkpoints, deterministic token batches, the resumable loop and a torchrun launcher.

DeepSpeed is imported only when a DeepSpeed engine is built, so importing this package stays cheap.
"""

from training.builder import build_engine
from training.checkpoint import (
    CheckpointCorrupt,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    prune,
    save_checkpoint,
)
from training.data import TokenBatches
from training.engine import Engine, StepResult
from training.launch import run_distributed
from training.loop import TrainResult, train
from training.merge import load_merged, merge_checkpoints
from training.schedule import wsm_lr_factor
from training.state_io import load_state, save_state

__all__ = [
    "CheckpointCorrupt",
    "Engine",
    "StepResult",
    "TokenBatches",
    "TrainResult",
    "build_engine",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_merged",
    "load_model_weights",
    "load_state",
    "merge_checkpoints",
    "prune",
    "run_distributed",
    "save_checkpoint",
    "save_state",
    "train",
    "wsm_lr_factor",
]
