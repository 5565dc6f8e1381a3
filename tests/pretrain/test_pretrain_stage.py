"""The pre-training stage on a tiny curated world: trains, merges, evaluates, exports; or imports a checkpoint."""

import json

import pytest

from configs import resolve
from model import load_hf

SMALL = {
    "environments.sft_prompts_per_family": 8,
    "environments.rl_prompts_per_family": 4,
    "environments.eval_prompts_per_family": 6,
    "environments.max_difficulty": 1,
    "curate.stdlib_max_files": 6,
    "curate.env_pretrain_prompts_per_family": 20,
    "curate.vocab_size": 384,
    "model.vocab_size": 384,
    "pretrain.engine.backend": "torch",
    "pretrain.loop.max_steps": 6,
    "pretrain.loop.checkpoint_every": 2,
    "pretrain.loop.micro_batch_size": 4,
    "pretrain.loop.seq_len": 32,
    "pretrain.optim.merge_last_k": 2,
    "pretrain.eval.prompts_per_family": 1,
    "pretrain.eval.max_new_tokens": 8,
    "pretrain.eval.heldout_windows": 8,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from corpus.curation import run_curation
    from training.pretrain import run_pretrain

    cfg = resolve("tiny_cpu", SMALL)
    root = tmp_path_factory.mktemp("pretrain")
    run_curation(cfg, root / "curated")
    logged = []
    metrics = run_pretrain(
        cfg,
        root / "curated",
        root / "out",
        checkpoint_root=root / "ckpt",
        on_log=lambda step, m: logged.append((step, dict(m))),
    )
    return cfg, root, metrics, logged


def test_trains_merges_evaluates_and_exports(world):
    cfg, root, metrics, logged = world
    assert metrics["merged_checkpoints"] == 2
    assert metrics["heldout_loss"] > 0 and metrics["unigram_heldout_loss"] > 0
    assert logged and logged[-1][0] == cfg.pretrain.loop.max_steps
    assert {"loss", "lm_loss", "load_balance", "tokens_per_s"} <= set(logged[-1][1])
    saved = json.loads((root / "out" / "metrics.json").read_text())
    assert saved["heldout_loss"] == pytest.approx(metrics["heldout_loss"])
    families = {row["family"] for row in metrics["eval"]}
    assert families == {*cfg.environments.families, "all"}
    model = load_hf(root / "out" / "checkpoint", base=cfg.model)
    assert (root / "out" / "checkpoint" / "tokenizer.json").exists()
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_second_run_resumes_from_its_checkpoints(world):
    from training.pretrain import run_pretrain

    cfg, root, metrics, _ = world
    again = run_pretrain(cfg, root / "curated", root / "out2", checkpoint_root=root / "ckpt")
    assert again["resumed_from_step"] == cfg.pretrain.loop.max_steps
    assert again["heldout_loss"] == pytest.approx(metrics["heldout_loss"])


def test_base_checkpoint_is_imported_instead_of_trained(world):
    from dataclasses import replace

    from training.pretrain import run_pretrain

    cfg, root, metrics, _ = world
    imported_cfg = replace(cfg, pretrain=replace(cfg.pretrain, base_checkpoint=str(root / "out" / "checkpoint")))
    imported = run_pretrain(imported_cfg, root / "curated", root / "out3", checkpoint_root=root / "ckpt3")
    assert imported["imported_from"] == str(root / "out" / "checkpoint")
    assert "train_loss" not in imported and not (root / "ckpt3").exists()
    assert imported["heldout_loss"] == pytest.approx(metrics["heldout_loss"], abs=1e-5)
