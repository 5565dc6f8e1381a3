"""The migration stage as a plain function (METHODS §3): the Ling-2.0 GQA base becomes the Lightning + MLA
hybrid in four steps, is continued-pre-trained, measured against the base after every step, and gated on
held-out-loss parity.

    1   gqa_to_hybrid           Lightning conversion (softmax layers stay GQA)      measure
    2   linear_warmup           train Lightning W_qkv + QK-Norm                     measure
    3a  fuse_qk_norm            QK-Norm folded into the GQA W_qkv (calibration)     measure
    3b  partial_training        train W_qkv, QK-Norm, g_proj, g_norm                measure
    3c  convert_to_mla          TransMLA: GQA -> MLA (calibration)                  measure
    4   mla_warmup              train the MLA projections                           measure
        continued_pretraining   train everything, merge the last k checkpoints      measure
        context_extension       YaRN on MLA rope, longer windows + haystacks        retrieval before/after, measure,
                                (training.migrate.extension)                        parity gate

Outputs under ``out_dir``:
  checkpoint/             the hybrid, official Ling-2.5/2.6 layout (BailingMoeV2_5ForCausalLM) + tokenizer
  eval_summary.parquet    EvalResult rows per family (+ "all"), the same eval settings as the base's
  eval_rollouts.parquet   every eval response with its verdict and token count
  metrics.json            every measurement point, per-phase training summary, conversion statistics, the gate
  retrieval.parquet       RetrievalRow per (length, depth) before and after context extension
A failed gate writes metrics.json (verdict included) and raises ``ParityGateFailed`` before evaluation and
export; the phases' training checkpoints stay under ``checkpoint_root`` for inspection and resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from configs import PipelineConfig, config_hash
from configs.migrate import MigrateConfig
from evals.parity_gate import ParityGateFailed, parity_verdict
from training.migrate.extension import extend_context
from training.migrate.phases import Measurements, calibration_windows, heldout_windows, on_device, train_phase

log = logging.getLogger(__name__)
OnLog = Callable[[str, int, Mapping[str, float]], None]
OUTPUTS = ("checkpoint", "eval_summary.parquet", "eval_rollouts.parquet", "metrics.json", "retrieval.parquet")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def base_digest(checkpoint: Path) -> str:
    """sha256 over the base checkpoint's weight files: part of the training-checkpoint key, so a different base
    with the same config never resumes another base's migration."""
    import hashlib

    from lineage.manifest import sha256_file

    digest = hashlib.sha256()
    for path in sorted(checkpoint.glob("*.safetensors")):
        digest.update(f"{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()


def training_key(cfg: PipelineConfig, mcfg: MigrateConfig, digest: str) -> str:
    """Folder name of a migration's training checkpoints: everything that decides the trained weights. The gate
    margin and the held-out windows only measure, so changing them re-measures the same training (resumed)."""
    measured_only = {f.name: f.default for f in dataclasses.fields(MigrateConfig)
                     if f.name in ("heldout_windows", "parity_margin_nats")}  # fmt: skip
    return config_hash({"pipeline": cfg, "migrate": dataclasses.replace(mcfg, **measured_only), "base": digest})


def remove_stale_outputs(out_dir: Path) -> None:
    """Rank 0's alone: the outputs are its, and two ranks removing one folder would race."""
    for name in OUTPUTS:
        stale = out_dir / name
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()


def write_metrics(out_dir: Path, metrics: Mapping[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")


def run_migrate(
    cfg: PipelineConfig,
    mcfg: MigrateConfig,
    curated: Path,
    base: Path,
    out_dir: Path,
    *,
    checkpoint_root: Path,
    on_log: OnLog | None = None,
) -> dict[str, Any]:
    """Migrate the base at ``base/checkpoint`` on the curated shards; returns the metrics written to metrics.json.
    ``on_log(name, step, metrics)``: name is a phase (training metrics every ``log_every`` steps) or
    ``measure.<point>`` (held-out loss and KL at a measurement point); step counts optimizer steps over all phases.
    Raises ``ParityGateFailed`` when the gate fails.

    Under a launcher every rank calls this: the conversions are deterministic (seeded initialisation, the same
    calibration windows on every rank), the phases train in lockstep on the same weights, so every rank holds the
    same model at every step; rank 0 alone writes ``out_dir``, evaluates and exports."""
    from corpus.shards import read_shards
    from evals.harness import unigram_loss
    from kernels.dispatch import place
    from model import load_hf
    from model.migration import (
        convert_to_mla,
        freeze_for_linear_warmup,
        freeze_for_mla_warmup,
        freeze_for_partial_training,
        fuse_qk_norm,
        gqa_to_hybrid,
        unfreeze_all,
    )
    from tasks.common import is_main_process
    from training.merge import load_merged

    torch.manual_seed(cfg.seed)
    if is_main_process():
        remove_stale_outputs(out_dir)
    train_tokens = read_shards(curated / "shards", "train")
    heldout_tokens = read_shards(curated / "shards", "heldout")
    # The one device decision; the phases' engines keep the model there, and measurements follow the model.
    base_model = place(load_hf(base / "checkpoint", base=cfg.model)).eval()
    base_model.requires_grad_(False)
    # Ling-2.0 keys from the checkpoint, hybrid shapes (MLA ranks, layer groups) from the pipeline's model config.
    config = base_model.config
    if mcfg.seq_len > config.max_position_embeddings:
        raise ValueError(
            f"migrate.seq_len {mcfg.seq_len} exceeds max_position_embeddings {config.max_position_embeddings}"
        )
    heldout = heldout_windows(heldout_tokens, mcfg.seq_len, mcfg.heldout_windows)
    calibration = calibration_windows(train_tokens, mcfg.seq_len, mcfg.calibration_windows, mcfg.micro_batch_size)
    run_dir = checkpoint_root / training_key(cfg, mcfg, base_digest(base / "checkpoint"))
    data_seed = mcfg.seed + cfg.seed

    tracker = Measurements(base_model, heldout, on_log)
    metrics: dict[str, Any] = {
        "unigram_heldout_loss": unigram_loss(train_tokens, heldout_tokens, config.vocab_size),
        "heldout_windows": sum(len(b) for b in heldout),
        "calibration_tokens": sum(b.numel() for b in calibration),
        "phases": {},
        "conversions": {},
        "steps": tracker.points,
    }
    metrics["base_heldout_loss"] = tracker.measure("base", base_model, step=0)["heldout_loss"]
    if (base / "metrics.json").exists():
        # What the pre-training stage reported for this base (equal when the held-out windows are the same).
        metrics["pretrain_heldout_loss"] = json.loads((base / "metrics.json").read_text()).get("heldout_loss")
    step, data_state = 0, None

    def run_phase(name: str, model: torch.nn.Module, freeze, *, router: bool = False):
        nonlocal step, data_state
        phase = getattr(mcfg, name)
        result = train_phase(name, model, freeze, phase, mcfg, train_tokens, checkpoint_dir=run_dir / name,
                             data_seed=data_seed, data_state=data_state, step_offset=step,
                             update_router_bias=router, on_log=on_log)  # fmt: skip
        step += phase.steps
        data_state = result.data_state
        metrics["phases"][name] = result.info
        log.info(
            "migrate: %s done (%d steps, %d trainable parameters)", name, phase.steps, result.info["trainable_params"]
        )
        return result

    model = gqa_to_hybrid(base_model, config, kv_init=mcfg.kv_init, seed=cfg.seed)
    metrics["conversions"]["lightning"] = {"kv_init": mcfg.kv_init}
    tracker.measure("lightning", model, step=step, previous=base_model)

    model = run_phase("linear_warmup", model, freeze_for_linear_warmup).model
    tracker.measure("linear_warmup", model, step=step)

    fused, fusion = fuse_qk_norm(model, on_device(calibration, model))
    metrics["conversions"]["qk_norm_fusion"] = {
        "layers": {i: {"q_rms": s.q_rms_H.tolist(), "k_rms": s.k_rms_G.tolist()} for i, s in fusion.stats.items()}
    }
    tracker.measure("qk_norm_fusion", fused, step=step, previous=model)
    model = run_phase("partial_training", fused, freeze_for_partial_training).model
    tracker.measure("partial_training", model, step=step)

    converted, mla_stats = convert_to_mla(model, on_device(calibration, model), q_basis=mcfg.q_basis)
    metrics["conversions"]["transmla"] = {
        "q_basis": mcfg.q_basis,
        "layers": {i: asdict(s) for i, s in mla_stats.items()},
    }
    tracker.measure("transmla", converted, step=step, previous=model)
    del fused, model
    model = run_phase("mla_warmup", converted, freeze_for_mla_warmup).model
    tracker.measure("mla_warmup", model, step=step)

    cpt = run_phase("continued_pretraining", model, unfreeze_all, router=True)
    model = cpt.model
    if cpt.checkpoints:
        from model.migration import heldout_loss

        cpt.info["heldout_loss_last"] = heldout_loss(model, on_device(heldout, model))
        merged = list(cpt.checkpoints)[-mcfg.merge_last_k :]
        # Through the engine, which gathers under ZeRO-3; with ZeRO 0-2 this is the same module, now merged.
        model = load_merged(cpt.engine, merged).eval()
        cpt.info["merged_checkpoints"] = len(merged)
    model.requires_grad_(False)
    final = tracker.measure("continued_pretraining", model, step=step)
    retrieval = None
    if mcfg.context_extension.stages:
        model, extension, retrieval = extend_context(model, mcfg, train_tokens, curated, run_dir=run_dir,
                                                     data_seed=data_seed, retrieval_seed=cfg.seed, step_offset=step,
                                                     on_log=on_log)  # fmt: skip
        step += extension["steps"]
        metrics["context_extension"] = {**extension, "retrieval": retrieval.to_dict("records")}
        # The gate reads the model that is exported: the extended one, on the same short held-out windows.
        final = tracker.measure("context_extension", model, step=step)
    metrics.update(heldout_loss=final["heldout_loss"], kl_vs_base=final["kl_vs_base"], total_steps=step)

    verdict = parity_verdict(metrics["base_heldout_loss"], final["heldout_loss"], mcfg.parity_margin_nats)
    metrics["parity_gate"] = verdict
    if not is_main_process():
        if not verdict["passed"]:
            raise ParityGateFailed(verdict, metrics)
        return metrics
    write_metrics(out_dir, metrics)
    if retrieval is not None:
        retrieval.to_parquet(out_dir / "retrieval.parquet", index=False)
    if not verdict["passed"]:
        raise ParityGateFailed(verdict, metrics)
    log.info(
        "migrate: parity gate passed (%.4f <= %.4f + %.3f)",
        final["heldout_loss"],
        metrics["base_heldout_loss"],
        mcfg.parity_margin_nats,
    )
    evaluate_and_export(cfg, model, curated, base, out_dir, metrics)
    write_metrics(out_dir, metrics)
    return metrics


def evaluate_and_export(
    cfg: PipelineConfig, model: torch.nn.Module, curated: Path, base: Path, out_dir: Path, metrics: dict[str, Any]
) -> None:
    """The harness eval with the base's eval settings (``cfg.pretrain.eval``, so the tables compare row for row)
    and the export of the hybrid with the tokenizer."""
    import pandas as pd

    from corpus.tokenizer import EOS, PAD, load_tokenizer
    from environments import all_environments
    from evals.harness import evaluate_policy
    from evals.tasks import eval_tasks
    from inference.native import NativeEngine
    from inference.sampling import SamplingParams
    from model import count_parameters, export_hybrid_hf

    ecfg = cfg.pretrain.eval
    total, active = count_parameters(model)
    metrics.update(params_total=total, params_active=active)
    tokenizer = load_tokenizer(curated / "tokenizer")
    engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
    summary, rollouts = evaluate_policy(
        engine,
        all_environments(cfg.environments),
        eval_tasks(curated, ecfg.prompts_per_family),
        checkpoint="migrate",
        params=SamplingParams(temperature=0.0, max_new_tokens=ecfg.max_new_tokens),
        max_turns=ecfg.max_tool_turns,
    )
    checkpoint = export_hybrid_hf(model, out_dir / "checkpoint")
    for name in TOKENIZER_FILES:
        shutil.copy(curated / "tokenizer" / name, checkpoint / name)
    summary.to_parquet(out_dir / "eval_summary.parquet", index=False)
    rollouts.to_parquet(out_dir / "eval_rollouts.parquet", index=False)
    metrics["eval"] = summary.to_dict("records")
    if (base / "eval_summary.parquet").exists():
        metrics["base_eval"] = pd.read_parquet(base / "eval_summary.parquet").to_dict("records")
