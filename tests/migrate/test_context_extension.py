"""Context extension (training.migrate.extension): the batch mix and its resume, the lower expert-bias rate,
the curated haystacks' contract and their separation from the evaluation's, and the extended model."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from migrate_world import EXTENSION, migrate_config

from corpus.haystack import NAMESPACE, eval_names, train_haystacks
from data_contracts.haystack import TABLE, screen_haystacks
from data_contracts.quarantine import QuarantineLedger
from evals.long_context import eval_haystacks, haystack
from training.migrate.extension import ExtensionBatches, rope_scaling_for, scale_rope


def test_batches_mix_and_resume_exactly():
    tokens = np.arange(10_000, dtype=np.int64) % 251 + 5
    stacks = [np.full(n, 1000 + n, dtype=np.int64) for n in (20, 40, 60, 300)]  # 300 > the row: never used
    full = ExtensionBatches(tokens, stacks, 64, 4, 0.5, seed=3)
    first = [next(full) for _ in range(5)]
    for batch in first:
        assert batch.shape == (4, 65)
        long_rows, haystack_rows = batch[:2], batch[2:]
        assert all(int(r[0]) < 1000 for r in long_rows)  # stream windows
        for row in haystack_rows:  # a haystack, then the stream
            n = int(row[0]) - 1000
            assert n in (20, 40, 60) and torch.all(row[:n] == row[0]) and int(row[n]) < 1000
    resumed = ExtensionBatches(tokens, stacks, 64, 4, 0.5, seed=3)
    resumed.load_state_dict({**full.state_dict(), "step": 2})
    assert all(torch.equal(next(resumed), first[i]) for i in (2, 3, 4))
    # Two ranks of 2 rows each take exactly the one-process batch's halves.
    ranks = [ExtensionBatches(tokens, stacks, 64, 2, 0.5, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(torch.cat([next(r) for r in ranks]), first[0])
    with pytest.raises(ValueError, match="seed=3"):
        ExtensionBatches(tokens, stacks, 64, 4, 0.5, seed=4).load_state_dict(full.state_dict())
    with pytest.raises(ValueError, match="no curated haystack fits"):
        ExtensionBatches(tokens, stacks[3:], 64, 4, 0.5, seed=3)


def test_extension_moves_the_expert_bias_by_the_lower_rate(world, tmp_path):
    """One extension step on the migrated hybrid: every bias moves by rate · (sign - mean sign), so by at most
    2 · 1e-4 and by a multiple of 1e-4 / E; the continued pre-training rate (1e-3) would move it 10x more."""
    from corpus.shards import read_shards
    from model import load_hf
    from model.migration import gqa_to_hybrid
    from model.moe import routers
    from training.migrate.extension import train_stage

    base = load_hf(world.base / "checkpoint", base=world.cfg.model).eval()
    model = gqa_to_hybrid(base, base.config)
    before = [r.expert_bias.clone() for r in routers(model)]
    mcfg = migrate_config()
    stage = dataclasses.replace(EXTENSION.stages[0], steps=1, lr=1e-6, warmup_steps=0)
    tokens = read_shards(world.curated / "shards", "train")
    stacks = [np.asarray(tokens[:90], dtype=np.int64)]
    model, info = train_stage("context_extension_0", stage, model, mcfg, tokens, stacks, checkpoint_dir=tmp_path,
                              data_seed=0, step_offset=0)  # fmt: skip
    rate = mcfg.context_extension.router_bias_update_rate
    assert info["router_bias_update_rate"] == rate == 1e-4 < model.config.router_bias_update_rate
    for bias, old in zip((r.expert_bias for r in routers(model)), before, strict=True):
        moved = (bias - old).abs()
        assert moved.max() > 0 and moved.max() <= 2 * rate + 1e-9
        steps = (bias - old) / (rate / bias.numel())  # rate · (sign - mean sign) is a multiple of rate / E
        torch.testing.assert_close(steps, steps.round(), atol=1e-3, rtol=0)
    assert model.config.rope_scaling.factor == stage.seq_len / mcfg.seq_len


def test_scale_rope_keeps_the_weights_and_sets_the_config(world):
    from model import load_hf
    from model.migration import gqa_to_hybrid

    base = load_hf(world.base / "checkpoint", base=world.cfg.model).eval()
    model = gqa_to_hybrid(base, base.config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    scaling = rope_scaling_for(EXTENSION, 128, 32)
    scale_rope(model, scaling, 128)
    assert model.config.rope_scaling == scaling and scaling.factor == 4.0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_contract_quarantines_bad_rows_with_their_rule():
    def count(text):
        return len(text.split())

    ext = dataclasses.replace(EXTENSION, train_haystacks=8)
    raw = train_haystacks(count, ext, seed=0)
    bad = raw.copy()
    bad.loc[0, "answer"] = "12345" if raw.loc[0, "answer"] != "12345" else "54321"  # not what the needle states
    bad.loc[1, "prompt"] = "   "
    bad.loc[2, "length"] = 3  # the prompt does not fit
    bad.loc[3, "haystack_id"] = bad.loc[4, "haystack_id"]  # a second row with one id
    bad.loc[5, "prompt"] = None
    ledger = QuarantineLedger()
    kept = screen_haystacks(bad, count, {raw.loc[6, "name"].lower()}, ledger)  # row 6's name: an eval's
    rules = dict(zip(ledger.frame()["row_id"], ledger.frame()["rule"], strict=True))
    assert sorted(ledger.counts(TABLE).items()) == sorted(
        {"unverified_label": 1, "empty_text": 1, "length_out_of_bounds": 1, "duplicate_id": 1, "null_field": 1,
         "eval_contamination": 1}.items()
    )  # fmt: skip
    assert rules[raw.loc[0, "haystack_id"]] == "unverified_label" and rules[raw.loc[6, "haystack_id"]] == (
        "eval_contamination"
    )
    assert len(kept) + ledger.count(TABLE) == len(bad) and len(kept) == 2
    # Row 3 took row 4's id first, so row 4 is the duplicate.
    assert list(kept["haystack_id"]) == [raw.loc[4, "haystack_id"], raw.loc[7, "haystack_id"]]
    assert list(kept["prompt"]) == [raw.loc[3, "prompt"], raw.loc[7, "prompt"]]


def test_training_haystacks_are_disjoint_from_the_evaluations(world):
    from corpus.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(world.curated / "tokenizer")

    def count(text):
        return len(tokenizer.encode(text).ids)

    train = pd.read_parquet(world.curated / "haystack.parquet")
    cfg = dataclasses.replace(world.cfg, migrate=migrate_config())
    retrieval = dataclasses.replace(cfg.evaluate.retrieval, lengths=(128,))
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, retrieval=retrieval))
    names = eval_names(count, cfg)
    assert names and not names & {n.lower() for n in train["name"]}
    evals = eval_haystacks(count, retrieval)
    assert not {s.prompt for s in evals} & set(train["prompt"])
    # Same (length, depth, seed), other namespace: another haystack.
    assert haystack(count, 128, 0.5, 0).prompt != haystack(count, 128, 0.5, 0, namespace=NAMESPACE).prompt
