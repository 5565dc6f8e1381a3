"""The conversion steps of the migration in order, each followed by its measured effect (METHODS §3.1):

    1   gqa_to_hybrid     Lightning conversion            (then step 2: train, freeze_for_linear_warmup)
    3a  fuse_qk_norm      QK-Norm removal by calibration  (then step 3b: train, freeze_for_partial_training)
    3c  convert_to_mla    TransMLA                        (then step 4: train, freeze_for_mla_warmup; unfreeze_all)

``convert`` runs 1, 3a and 3c back to back (no training), which is what a stage calls when it measures the
conversions alone; a stage that trains in between calls the three step functions itself with the freeze
functions of ``freeze.py``. After every step the report records, on held-out batches:

    kl_vs_base      mean KL(base || model) of next-token distributions
    kl_vs_previous  the same against the model before this step (the step's own effect)
    heldout_loss    next-token cross-entropy (nats)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from torch import nn

from model.hybrid import HybridForCausalLM

from .calibration import Batch
from .expand import KVInit, gqa_to_hybrid
from .metrics import heldout_loss, logits_kl
from .qk_norm_fusion import fuse_qk_norm
from .transmla import QBasis, convert_to_mla

StepLog = Callable[[str, dict[str, float]], None]
STEPS = ("lightning", "qk_norm_fusion", "transmla")


def convert(
    base_model: nn.Module,
    config,
    calibration_batches: Iterable[Batch],
    *,
    kv_init: KVInit = "replicate",
    heldout_batches: Iterable[Batch] | None = None,
    q_basis: QBasis = "activations",
    seed: int = 0,
    log: StepLog | None = None,
) -> tuple[HybridForCausalLM, dict[str, Any]]:
    """Steps 1, 3a, 3c on ``base_model`` (a ``Ling2ForCausalLM``, unchanged). Returns the hybrid, with exactly the
    modules of ``HybridForCausalLM(config)``, and the report: ``report["base"]["heldout_loss"]`` and, for each
    of ``STEPS``, the metrics above plus the step's per-layer statistics under ``"layers"``. ``heldout_batches``
    defaults to the calibration batches (then the KL is an in-sample number). ``log(step, metrics)`` receives
    each step's scalar metrics as soon as they exist (e.g. to forward them to the run tracker)."""
    calibration = list(calibration_batches)
    heldout = calibration if heldout_batches is None else list(heldout_batches)
    report: dict[str, Any] = {"base": {"heldout_loss": heldout_loss(base_model, heldout)}}

    def record(step: str, model: nn.Module, previous: nn.Module, extra: dict[str, Any]) -> None:
        kl_base = logits_kl(base_model, model, heldout)
        kl_previous = kl_base if previous is base_model else logits_kl(previous, model, heldout)
        metrics = {"kl_vs_base": kl_base, "kl_vs_previous": kl_previous, "heldout_loss": heldout_loss(model, heldout)}
        report[step] = {**metrics, **extra}
        if log is not None:
            log(step, metrics)

    hybrid = gqa_to_hybrid(base_model, config, kv_init=kv_init, seed=seed)
    record("lightning", hybrid, base_model, {"kv_init": kv_init})

    fused, fusion = fuse_qk_norm(hybrid, calibration)
    layers = {
        i: {"q_rms": s.q_rms_H.tolist(), "k_rms": s.k_rms_G.tolist(), "num_tokens": s.num_tokens}
        for i, s in fusion.stats.items()
    }
    record("qk_norm_fusion", fused, hybrid, {"layers": layers})

    converted, mla_stats = convert_to_mla(fused, calibration, q_basis=q_basis)
    record("transmla", converted, fused, {"q_basis": q_basis, "layers": {i: asdict(s) for i, s in mla_stats.items()}})
    return converted, report
