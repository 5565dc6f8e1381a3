"""WSM learning-rate schedule: Warmup, Stable, then Merge instead of decay.

Ling 2.0/2.6 pre-train with a linear warmup to the peak lr and then a constant lr; the annealing a decay
phase would give comes from averaging the weights of the last k checkpoints
(``training.merge.merge_checkpoints``), which also lets any later point of the run be "annealed" after the
fact. This module is the pure schedule: it reads no checkpoint, so the engine can import it without
pulling in checkpoint I/O (which itself types against the engine).

    factor(s) = (s + 1) / warmup_steps                         for s < warmup_steps
              = 1                                              afterwards (min_lr_ratio == 0, the default)
              = r + (1 - r) * (1 + cos(pi * p)) / 2            afterwards, with r = min_lr_ratio in (0, 1)
                p = (s - warmup_steps) / (total_steps - warmup_steps), capped at 1

``s`` counts optimizer steps already taken, so the first step uses ``1 / warmup_steps`` of the peak and
step ``warmup_steps - 1`` the full peak.
"""

from __future__ import annotations

import math


def wsm_lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr for the optimizer step that follows ``step`` completed steps."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not 0.0 < min_lr_ratio < 1.0:
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
