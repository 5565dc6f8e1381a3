"""A tiny world for the migration stage: curated shards, tokenizer and eval set, and a Ling-2.0 base trained
for a few seconds, laid out as the curation and pre-training stages lay them out.

The token stream is periodic (a random unit of 2-6 of 32 token ids, repeated 3-9 times), so next-token prediction
needs attention (copying the unit) and the migration's attention conversions visibly move the held-out loss; a
uniform random stream would leave only the unigram, which every conversion keeps.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from configs import resolve
from configs.migrate import ContextExtensionConfig, ExtensionStageConfig, MigrateConfig, MigratePhaseConfig
from configs.training import EngineConfig

VOCAB = 320
MODEL = {
    "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2, "n_group": 4,
    "topk_group": 2, "moe_intermediate_size": 32, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8, "v_head_dim": 16, "max_position_embeddings": 128,
}  # fmt: skip
SEQ_LEN = 32
HELDOUT_WINDOWS = 8


def pipeline_config():
    overrides = {f"model.{k}": v for k, v in MODEL.items()}
    overrides |= {
        "curate.vocab_size": VOCAB,
        "pretrain.eval.prompts_per_family": 1,
        "pretrain.eval.max_new_tokens": 6,
        "pretrain.eval.max_tool_turns": 1,
        # Post-training is not run here, but its lengths must fit this world's shorter context to validate.
        "post_train.sft.seq_len": MODEL["max_position_embeddings"],
        "post_train.contracts.max_pair_tokens": MODEL["max_position_embeddings"],
        "lineage.dvc": False,
        # The run's extension is migrate_config()'s (4x, within this world's 128 positions), not the profile's.
        "migrate.context_extension.stages": [],
    }
    return resolve("tiny_cpu", overrides)


# Context extension 32 -> 128 (4x: the world's model has 128 positions), 6 steps of 2 windows.
EXTENSION = ContextExtensionConfig(
    stages=(ExtensionStageConfig(seq_len=128, steps=6, lr=3e-3, warmup_steps=1, micro_batch_size=2,
                                 long_document_fraction=0.5),),
    train_haystacks=12, retrieval_lengths=(96, 128), retrieval_depths=(0.0, 1.0), retrieval_samples_per_cell=1,
)  # fmt: skip


def migrate_config(**overrides) -> MigrateConfig:
    phase = lambda steps: MigratePhaseConfig(steps=steps, lr=3e-3, warmup_steps=2)  # noqa: E731
    cfg = MigrateConfig(
        engine=EngineConfig(backend="torch"), linear_warmup=phase(8), partial_training=phase(4), mla_warmup=phase(8),
        continued_pretraining=phase(16), calibration_windows=8, heldout_windows=HELDOUT_WINDOWS, micro_batch_size=4,
        seq_len=SEQ_LEN, log_every=2, checkpoint_every=4, keep_checkpoints=2, merge_last_k=2,
        context_extension=EXTENSION,
    )  # fmt: skip
    return dataclasses.replace(cfg, **overrides)


def periodic_stream(n_tokens: int, seed: int, low: int, high: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    while total < n_tokens:
        unit = rng.integers(low, high, size=int(rng.integers(2, 7)))
        piece = np.tile(unit, int(rng.integers(3, 10)))
        pieces.append(piece)
        total += len(piece)
    return np.concatenate(pieces)[:n_tokens].astype(np.uint16)


def write_curated(cfg, out: Path) -> None:
    from corpus.env_data import prompt_frame
    from corpus.haystack import write_haystacks
    from corpus.shards import write_shards
    from corpus.tokenizer import save_tokenizer, train_tokenizer
    from environments import get_environment

    tasks = [t for family in ("math", "tool_use") for t in
             get_environment(family, cfg.environments).generate(2, seed=0, difficulty=1)]  # fmt: skip
    prompt_frame(tasks).to_parquet(out / "eval.parquet", index=False)
    corpus = [Path(json.__file__).parent.joinpath(name).read_text() for name in ("encoder.py", "decoder.py")]
    tokenizer = train_tokenizer(corpus + [t.prompt for t in tasks], vocab_size=VOCAB)
    save_tokenizer(tokenizer, out / "tokenizer")
    entries = write_shards(periodic_stream(4096, 1, 8, 40), out / "shards", split="train", shard_tokens=1500)
    entries += write_shards(periodic_stream(512, 2, 8, 40), out / "shards", split="heldout", shard_tokens=1500)
    (out / "shards" / "index.json").write_text(json.dumps(entries))
    # As the curation stage writes them, for this world's extension and evaluation grids.
    # This world's tokenizer spends ~80 tokens on a bare haystack: the evaluation grid starts above that.
    retrieval = dataclasses.replace(cfg.evaluate.retrieval, lengths=(128,))
    grids = {"migrate": migrate_config(), "evaluate": dataclasses.replace(cfg.evaluate, retrieval=retrieval)}
    write_haystacks(dataclasses.replace(cfg, **grids), out)


def train_base(cfg, curated: Path, out: Path, steps: int = 60) -> None:
    from corpus.shards import read_shards
    from evals.harness import heldout_loss
    from model import Ling2ForCausalLM, export_hf
    from training.data import TokenBatches

    torch.manual_seed(0)
    model = Ling2ForCausalLM(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    batches = TokenBatches(read_shards(curated / "shards", "train"), SEQ_LEN, 8, seed=0)
    for _ in range(steps):
        ids = next(batches)
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    export_hf(model.eval(), out / "checkpoint")
    # As the pre-training stage reports it: the harness's held-out loss.
    loss = heldout_loss(model, read_shards(curated / "shards", "heldout"), seq_len=SEQ_LEN, max_windows=HELDOUT_WINDOWS)
    (out / "metrics.json").write_text(json.dumps({"heldout_loss": loss}))
