"""A tiny checkpoint that has memorised a handful of tasks of every family (so its accuracy is known: all of
them), exported in the official layout with its tokenizer, as the stages export theirs."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from configs.data import EnvironmentsConfig
from configs.evaluation import EvaluateConfig, RetrievalConfig
from configs.model import ModelConfig, tiny_model
from corpus.tokenizer import EOS, PAD, save_tokenizer, train_tokenizer
from environments import Environment, Task, all_environments
from model import Ling2ForCausalLM, export_hf

# Tiny shapes gain nothing from intra-op threads; on a shared 2-core machine spinning threads slow them down.
torch.set_num_threads(1)

TASKS_PER_FAMILY = {"math": 3, "code": 1, "search": 2, "tool_use": 2, "workflow": 2}
TRAIN_STEPS = 50
# Two layers (one dense, one MoE of 8 experts): learns the handful of tasks in a few seconds on one core.
SHAPE = {"num_hidden_layers": 2, "num_experts": 8, "n_group": 2, "topk_group": 1, "num_nextn_predict_layers": 0}


@dataclass(frozen=True)
class World:
    envs: dict[str, Environment]
    tasks: list[Task]
    references: dict[str, str]  # task_id -> the response the model memorised
    checkpoint: Path
    model_cfg: ModelConfig
    heldout_tokens: np.ndarray


def memorised_texts(envs, tasks) -> dict[str, str]:
    return {t.task_id: envs[t.family].reference_responses(t, seed=0, n=2)[1].text for t in tasks}


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    envs = all_environments(EnvironmentsConfig())
    tasks = [t for family, n in TASKS_PER_FAMILY.items() for t in envs[family].generate(n, seed=0, difficulty=1)]
    references = memorised_texts(envs, tasks)
    texts = [t.prompt + references[t.task_id] for t in tasks]
    tokenizer = train_tokenizer(texts * 20, vocab_size=400)
    eos, pad = tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD)
    cfg = dataclasses.replace(tiny_model(), vocab_size=tokenizer.get_vocab_size(), **SHAPE)
    torch.manual_seed(0)
    model = Ling2ForCausalLM(cfg)
    seqs = [[*tokenizer.encode(text).ids, eos] for text in texts]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    labels = ids.masked_fill(ids == pad, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(TRAIN_STEPS):
        loss = model(ids, attention_mask=(ids != pad).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("memorised") / "checkpoint"
    export_hf(model.eval(), folder)
    save_tokenizer(tokenizer, folder)
    stream = np.array([token for s in seqs for token in s], dtype=np.uint16)
    return World(envs, tasks, references, folder, cfg, stream)


@pytest.fixture(scope="session")
def eval_cfg() -> EvaluateConfig:
    return EvaluateConfig(
        max_new_tokens=64,
        pass_k=(1, 2),
        samples_per_prompt=3,
        heldout_seq_len=32,
        heldout_windows=8,
        retrieval=RetrievalConfig(lengths=(128, 192), depths=(0.0, 1.0), samples_per_cell=2, max_new_tokens=4),
    )


NOISE = 0.5  # relative to each tensor's own spread: enough to erase what the model memorised


@pytest.fixture(scope="session")
def noisy_checkpoint(world, tmp_path_factory) -> Path:
    """The memorised checkpoint with Gaussian noise on every weight: a degraded copy of it."""
    from model import load_checkpoint

    model = load_checkpoint(world.checkpoint, base=world.model_cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            spread = param.std() if param.numel() > 1 else param.abs()
            param.add_(torch.randn(param.shape, generator=generator) * NOISE * spread)
    folder = tmp_path_factory.mktemp("noisy") / "checkpoint"
    export_hf(model.eval(), folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((world.checkpoint / name).read_bytes())
    return folder


@pytest.fixture(scope="session")
def comparison(world, noisy_checkpoint, eval_cfg):
    """The memorised checkpoint and its noised copy compared; the noised one carries a mismatch summary."""
    from evals.compare import compare_checkpoints

    return compare_checkpoints(
        {"memorised": world.checkpoint, "noisy": noisy_checkpoint},
        world.envs,
        world.tasks,
        eval_cfg,
        base=world.model_cfg,
        heldout_tokens=world.heldout_tokens,
        mismatch={"noisy": {"kl": 0.25, "tis_clip_fraction": 0.5}},
        trained_context={"memorised": 128, "noisy": 128},
    )
