"""A tiny world for the KPop RL stage, laid out as the curation and post-training stages lay theirs out:
``curated/`` (tokenizer, eval.parquet, rl_prompts.parquet of the agentic families) and ``post_train/checkpoint``
(a hybrid in the official layout, with the tokenizer beside it).

The hybrid is the tiny profile's shape, randomly initialised: RL machinery, contracts and reports do not need
a policy that solves anything, and building one takes a second.

    python tests/rl/rl_world.py OUT      # a world to time the stage on: python -m tasks kpop_rl needs data/
"""

import dataclasses
import shutil
import sys
from pathlib import Path

import torch

from configs import resolve
from configs.rl import AGENTIC_FAMILIES


def pipeline_config(**overrides):
    return resolve("tiny_cpu", {"lineage.dvc": False, **overrides})


def write_world(cfg, curated: Path, post_train: Path) -> None:
    from corpus.env_data import prompt_frame
    from corpus.tokenizer import save_tokenizer, train_tokenizer
    from environments import all_environments
    from model import HybridForCausalLM, export_checkpoint

    envs = all_environments(cfg.environments)
    tasks = {
        split: [
            t
            for family in AGENTIC_FAMILIES
            for difficulty in (1, 2)
            for t in envs[family].generate(6, seed=seed + difficulty, difficulty=difficulty, allow_fewer=True)
        ]
        for split, seed in (("eval", 11), ("rl_prompts", 22))
    }
    for split, split_tasks in tasks.items():
        prompt_frame(split_tasks).to_parquet(curated / f"{split}.parquet", index=False)
    texts = [t.prompt + " " + t.answer for split_tasks in tasks.values() for t in split_tasks]
    for family in AGENTIC_FAMILIES:
        task = tasks["rl_prompts"][AGENTIC_FAMILIES.index(family) * 12]
        texts += [c.text for c in envs[family].reference_responses(task, seed=0, n=2)]
    save_tokenizer(train_tokenizer(texts * 4, vocab_size=cfg.model.vocab_size), curated / "tokenizer")
    torch.manual_seed(0)
    model = HybridForCausalLM(dataclasses.replace(cfg.model, initializer_range=0.08))
    export_checkpoint(model.eval(), post_train / "checkpoint")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(curated / "tokenizer" / name, post_train / "checkpoint" / name)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    (root / "curate").mkdir(parents=True, exist_ok=True)
    (root / "post_train").mkdir(parents=True, exist_ok=True)
    write_world(pipeline_config(), root / "curate", root / "post_train")
    print(f"wrote {root}/curate and {root}/post_train")
