"""A tiny world for the post-training phases alone: the tiny hybrid (randomly initialised, wide enough that
sampling varies), a BPE tokenizer trained on math prompts and answers, SFT rows, RL prompts, and a math
environment whose verifier is a fixed rule (``EvenLengthMath``).

The rule stands in for a policy that solves anything: a random policy never answers right, so the real
verifier would give every sample the same reward (zero advantages, nothing trained) and no preference pair.
Under the rule some samples of each prompt are "correct", so RL advantages and preference pairs are non-zero
and the phases really update the model.
"""

import dataclasses
from pathlib import Path

import pandas as pd
import torch

from configs import resolve
from environments.base import Verdict

VOCAB = 320
MODEL = {
    "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2, "n_group": 4,
    "topk_group": 2, "moe_intermediate_size": 32, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8, "v_head_dim": 16, "max_position_embeddings": 128, "initializer_range": 0.08,
}  # fmt: skip
PHASE_STEPS = {"sft": 8, "rl": 4, "preference": 6}


def pipeline_config(backend: str = "torch", **overrides):
    settings = {f"model.{k}": v for k, v in MODEL.items()}
    settings |= {
        "curate.vocab_size": VOCAB,
        "lineage.dvc": False,
        "post_train.engine.backend": backend,
        "post_train.eval.max_tool_turns": 1,
        "post_train.contracts.max_pair_tokens": 128,
        "post_train.sft.steps": PHASE_STEPS["sft"],
        "post_train.sft.batch_size": 4,
        "post_train.sft.seq_len": 64,
        "post_train.sft.log_every": 2,
        "post_train.sft.checkpoint_every": 2,
        "post_train.rl.steps": PHASE_STEPS["rl"],
        "post_train.rl.prompts_per_step": 2,
        "post_train.rl.samples_per_prompt": 4,
        "post_train.rl.max_new_tokens": 12,
        "post_train.rl.checkpoint_every": 1,
        "post_train.preference.steps": PHASE_STEPS["preference"],
        # Three of the six prompts per step: most steps draw a solvable one, some (the first) none.
        "post_train.preference.prompts_per_step": 3,
        "post_train.preference.samples_per_prompt": 4,
        "post_train.preference.max_new_tokens": 12,
        "post_train.preference.checkpoint_every": 1,
        # Larger steps than the tiny profile's, so that a few updates move this small model measurably.
        "post_train.rl.optim.lr": 3e-3,
        "post_train.preference.optim.lr": 3e-3,
        # No context extension in this world: its 128 positions are below the tiny profile's extended 1024.
        "migrate.context_extension.stages": [],
    }
    return resolve("tiny_cpu", settings | overrides)


class EvenLengthMath:
    """A math environment whose verifier calls a response correct iff its prompt is one of ``solvable`` and its
    length is even. The unsolvable prompts give preference steps that build no pair (when a step draws
    none of the solvable ones), so the phase's "no pair, no update" path is taken too."""

    def __init__(self, solvable: set[str]) -> None:
        self.solvable = solvable

    def verify(self, task, response: str) -> Verdict:
        correct = task.task_id in self.solvable and len(response) % 2 == 0
        return Verdict(correct=correct, format_ok=True, extracted=None, reason="rule")

    def observe(self, task, transcript: str) -> str | None:
        return None


@dataclasses.dataclass
class World:
    cfg: object
    tokenizer: object
    envs: dict
    tasks: list
    sft_rows: pd.DataFrame

    def model(self):
        """The phases' starting model: the same weights every call."""
        from model import HybridForCausalLM

        torch.manual_seed(0)
        return HybridForCausalLM(self.cfg.model)


def build_world(cfg) -> World:
    from corpus.tokenizer import train_tokenizer
    from environments import get_environment

    math = get_environment("math", cfg.environments)
    tasks = math.generate(6, seed=0, difficulty=1)
    rows = pd.DataFrame(
        {"prompt": [t.prompt for t in tasks], "response": [f"The answer is {t.answer}." for t in tasks]}
    )
    tokenizer = train_tokenizer(list(rows["prompt"] + " " + rows["response"]) * 4, vocab_size=VOCAB)
    envs = {"math": EvenLengthMath({t.task_id for t in tasks[:3]})}
    return World(cfg=cfg, tokenizer=tokenizer, envs=envs, tasks=tasks, sft_rows=rows)


def run_phase(world: World, phase: str, checkpoint_dir: Path | None, on_log, ledger=None) -> tuple[object, dict]:
    """Run one phase from the world's starting model; returns the model and what the phase returned
    (the preference phase's pair counts under ``contracts``)."""
    from data_contracts import QuarantineLedger
    from training.post_train import phases

    model = world.model()
    w = world
    if phase == "sft":
        result = phases.sft_phase(model, w.tokenizer, w.sft_rows, w.cfg, on_log, checkpoint_dir=checkpoint_dir)
    elif phase == "rl":
        result = phases.rl_phase(model, w.tokenizer, w.envs, w.tasks, w.cfg, on_log, checkpoint_dir=checkpoint_dir)
    else:
        from training.post_train.contracts import contract_counts

        ledger = QuarantineLedger() if ledger is None else ledger
        metrics, pairs = phases.preference_phase(
            model, w.tokenizer, w.envs, w.tasks, w.cfg, on_log, ledger, checkpoint_dir=checkpoint_dir
        )
        result = {**metrics, "contracts": contract_counts([pairs]), "quarantined": len(ledger.frame())}
    return model, result


def weights_digest(model) -> str:
    """sha256 over every tensor's bytes, in name order: equal iff the weights are bitwise equal."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_stage_world(world: World, curated: Path, base: Path) -> None:
    """The stage's inputs for this world, laid out as the curation and migration stages lay them out: the
    tokenizer, one correct candidate per prompt (the SFT table), the prompts as RL, SFT and eval sets, and the
    world's starting model as the migrated checkpoint."""
    from corpus.env_data import prompt_frame
    from corpus.tokenizer import save_tokenizer
    from model import export_checkpoint

    rows = [
        {"prompt_id": t.task_id, "candidate_idx": 0, "family": t.family, "difficulty": int(t.difficulty),
         "prompt": t.prompt, "response": response, "style": "short", "correct": True, "n_chars": len(response)}
        for t, response in zip(world.tasks, world.sft_rows["response"], strict=True)
    ]  # fmt: skip
    candidates = pd.DataFrame(rows)
    candidates.to_parquet(curated / "candidates.parquet", index=False)
    candidates.drop(columns="candidate_idx").to_parquet(curated / "sft.parquet", index=False)
    for name in ("rl_prompts", "sft_prompts", "eval"):
        prompt_frame(world.tasks).to_parquet(curated / f"{name}.parquet", index=False)
    save_tokenizer(world.tokenizer, curated / "tokenizer")
    export_checkpoint(world.model().eval(), base / "checkpoint")
