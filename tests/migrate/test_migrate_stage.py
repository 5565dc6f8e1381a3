"""The migration stage end to end on the tiny world: every step measured and logged, frozen tensors untouched in
a warmup, the export reloads bit for bit, a rerun resumes to identical numbers, and the gate fails loudly."""

import json
import math

import numpy as np
import pytest
import torch
from migrate_world import SEQ_LEN, migrate_config

from configs.migrate import MigratePhaseConfig
from corpus.shards import read_shards
from evals.harness import heldout_loss as harness_heldout_loss
from evals.parity_gate import ParityGateFailed
from model import load_hf, load_hybrid_hf
from model.migration import freeze_for_linear_warmup, fuse_qk_norm, gqa_to_hybrid, heldout_loss
from training.checkpoint import list_checkpoints
from training.merge import merge_checkpoints
from training.migrate.phases import CONVERSIONS, PHASES, POINTS, heldout_windows, train_phase
from training.migrate.run import run_migrate


def test_heldout_windows_score_like_the_harness(world):
    base = load_hf(world.base / "checkpoint", base=world.cfg.model)
    tokens = read_shards(world.curated / "shards", "heldout")
    ours = heldout_loss(base, heldout_windows(tokens, SEQ_LEN, 5, batch_size=2))
    assert ours == pytest.approx(harness_heldout_loss(base, tokens, seq_len=SEQ_LEN, max_windows=5), rel=1e-6)


def test_linear_warmup_leaves_frozen_tensors_bitwise_unchanged(world, tmp_path):
    mcfg = migrate_config()
    base = load_hf(world.base / "checkpoint", base=world.cfg.model).eval()
    model = gqa_to_hybrid(base, base.config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = read_shards(world.curated / "shards", "train")
    phase = MigratePhaseConfig(steps=3, lr=1e-2)
    result = train_phase(
        "linear_warmup", model, freeze_for_linear_warmup, phase, mcfg, tokens, checkpoint_dir=tmp_path, data_seed=0
    )
    trainable = set(result.info["trainable_tensors"])
    after = result.model.state_dict()
    assert trainable and all(".attention." in name for name in trainable)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    # Every change is a trainable tensor (buffers included: the expert bias stays put), and training moved them.
    assert changed <= trainable and changed
    assert all(not p.requires_grad for n, p in result.model.named_parameters() if n not in trainable)
    # The next conversion copies the trained model: it must be a plain module again, whatever wrapped it.
    fused, _ = fuse_qk_norm(result.model, heldout_windows(tokens, SEQ_LEN, 4))
    assert torch.equal(fused.lm_head.weight, result.model.lm_head.weight)


def test_run_measures_and_logs_every_step(passed_run, world):
    m = passed_run.metrics
    assert [p["point"] for p in m["steps"]] == list(POINTS)
    for point in m["steps"]:
        assert math.isfinite(point["heldout_loss"]) and point["kl_vs_base"] >= 0, point
        assert ("kl_vs_previous" in point) == (point["point"] in CONVERSIONS), point
    assert m["steps"][0]["kl_vs_base"] == 0.0 and m["steps"][0]["heldout_loss"] == m["base_heldout_loss"]
    # Same windows as the pre-training stage's report, so the same base number.
    assert m["base_heldout_loss"] == pytest.approx(m["pretrain_heldout_loss"], rel=1e-6)
    assert m["steps"][1]["kl_vs_previous"] == m["steps"][1]["kl_vs_base"] > 0  # step 1's previous is the base
    # Each phase trains: training steps counted through, and the step lands on the measurement after it.
    mcfg = passed_run.mcfg
    ends = np.cumsum([getattr(mcfg, p).steps for p in PHASES])
    extension = sum(stage.steps for stage in mcfg.context_extension.stages)
    assert [p["step"] for p in m["steps"] if p["point"] in PHASES] == list(ends)
    assert m["steps"][-1]["point"] == "context_extension" and m["total_steps"] == m["steps"][-1]["step"]
    assert m["total_steps"] == ends[-1] + extension > ends[-1]

    measured = [(name.removeprefix("measure."), step, logs) for name, step, logs in passed_run.logged
                if name.startswith("measure.")]  # fmt: skip
    assert [name for name, _, _ in measured] == list(POINTS)
    for (name, step, logs), point in zip(measured, m["steps"], strict=True):
        assert step == point["step"] and logs["kl_vs_base"] == point["kl_vs_base"], name
    for phase in PHASES:
        steps = [step for name, step, logs in passed_run.logged if name == phase and "loss" in logs]
        assert steps and steps == sorted(steps), phase

    # Trainable sets grow from the warmups to continued pre-training, which trains every parameter.
    trainable = {p: m["phases"][p]["trainable_params"] for p in PHASES}
    assert trainable["linear_warmup"] < trainable["partial_training"] < trainable["continued_pretraining"]
    assert trainable["continued_pretraining"] == m["params_total"]
    assert m["parity_gate"]["passed"] and m["parity_gate"]["margin_nats"] == 100.0
    assert m["parity_gate"]["migrated_heldout_loss"] == m["heldout_loss"] == m["steps"][-1]["heldout_loss"]
    on_disk = json.loads((passed_run.out_dir / "metrics.json").read_text())
    assert on_disk["parity_gate"] == m["parity_gate"] and len(on_disk["steps"]) == len(POINTS)
    assert {r["family"] for r in m["eval"]} == {"math", "tool_use", "all"}


def test_export_reloads_bit_exact(passed_run, world):
    checkpoint = passed_run.out_dir / "checkpoint"
    reloaded = load_hybrid_hf(checkpoint, base=world.cfg.model)
    (run_dir,) = passed_run.root.iterdir()
    # The exported model is the context-extended one: the extension's last checkpoint, and its YaRN scaling.
    merged = merge_checkpoints(list_checkpoints(run_dir / "context_extension_0")[-1:])
    assert reloaded.config.rope_scaling.factor == 128 / SEQ_LEN
    state = reloaded.state_dict()
    assert state.keys() == merged.keys()
    assert all(torch.equal(state[k], merged[k]) for k in state)
    assert all((checkpoint / name).exists() for name in ("tokenizer.json", "config.json", "model.safetensors"))
    assert json.loads((checkpoint / "config.json").read_text())["architectures"] == ["BailingMoeV2_5ForCausalLM"]
    heldout = heldout_windows(
        read_shards(world.curated / "shards", "heldout"), SEQ_LEN, passed_run.mcfg.heldout_windows
    )
    assert heldout_loss(reloaded, heldout) == passed_run.metrics["heldout_loss"]


def test_gate_fails_loudly_and_a_rerun_resumes_to_the_same_numbers(passed_run, world, tmp_path):
    # Same training (the margin is not part of the checkpoint key): every phase resumes from its last checkpoint.
    mcfg = migrate_config(parity_margin_nats=-10.0)
    with pytest.raises(
        ParityGateFailed, match=r"parity gate failed: migrated held-out loss \d+\.\d+ nats > base"
    ) as err:
        run_migrate(world.cfg, mcfg, world.curated, world.base, tmp_path, checkpoint_root=passed_run.root)
    verdict = err.value.verdict
    assert not verdict["passed"] and verdict["margin_nats"] == -10.0
    assert f"{verdict['migrated_heldout_loss']:.4f}" in str(err.value)
    assert f"{verdict['base_heldout_loss']:.4f}" in str(err.value)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["parity_gate"] == verdict and not (tmp_path / "checkpoint").exists()
    # Resume == uninterrupted: identical measurements at every point, no step retrained.
    assert err.value.metrics["steps"] == passed_run.metrics["steps"]
    assert all(err.value.metrics["phases"][p]["resumed_from_step"] == getattr(mcfg, p).steps for p in PHASES)
    stages = err.value.metrics["context_extension"]["stages"]
    assert [s["resumed_from_step"] for s in stages] == [s.steps for s in mcfg.context_extension.stages]
    assert err.value.metrics["context_extension"]["retrieval"] == passed_run.metrics["context_extension"]["retrieval"]
