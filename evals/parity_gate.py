"""The migration's parity gate (METHODS §3.3 acceptance): after continued pre-training the hybrid's held-out loss
must come within a margin of the base's, measured on the same held-out windows:

    passed  <=>  migrated_heldout_loss <= base_heldout_loss + margin_nats

A failed gate raises ``ParityGateFailed``; the stage writes its metrics (verdict included) before raising.
"""

from __future__ import annotations

import math
from typing import Any

from lineage.refusal import StageRefused


class ParityGateFailed(StageRefused):
    """The migrated model's held-out loss missed the base's by more than the margin. ``verdict`` holds the
    numbers, ``metrics`` everything the stage measured up to the gate."""

    def __init__(self, verdict: dict[str, Any], metrics: dict[str, Any] | None = None) -> None:
        self.verdict = verdict
        self.metrics = metrics or {}
        super().__init__(
            f"parity gate failed: migrated held-out loss {verdict['migrated_heldout_loss']:.4f} nats > base "
            f"{verdict['base_heldout_loss']:.4f} + margin {verdict['margin_nats']:.4f} "
            f"(gap {verdict['gap_nats']:+.4f} nats)"
        )


def parity_verdict(base_heldout_loss: float, migrated_heldout_loss: float, margin_nats: float) -> dict[str, Any]:
    """The gate's numbers and verdict; a non-finite loss fails."""
    gap = migrated_heldout_loss - base_heldout_loss
    passed = math.isfinite(gap) and migrated_heldout_loss <= base_heldout_loss + margin_nats
    return {
        "passed": bool(passed),
        "base_heldout_loss": float(base_heldout_loss),
        "migrated_heldout_loss": float(migrated_heldout_loss),
        "margin_nats": float(margin_nats),
        "gap_nats": float(gap),
    }
