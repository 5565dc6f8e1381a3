"""Environment-generated tables: eval / RL prompt sets, SFT examples, verified candidate responses,
and packed example pages for the pre-training mix. Every split has its own derived seed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from configs.data import EnvironmentsConfig
from tasks.curate.sources import stable_seed

EXAMPLES_PER_PAGE = 16


def generate_tasks(envs: Mapping[str, Any], cfg: EnvironmentsConfig, *, split: str, seed: int,
                   per_family: int) -> list[Any]:
    """``per_family`` tasks for each family, spread evenly over the configured difficulties."""
    levels = list(range(cfg.min_difficulty, cfg.max_difficulty + 1))
    tasks: list[Any] = []
    for family in cfg.families:
        for i, level in enumerate(levels):
            n = per_family // len(levels) + (1 if i < per_family % len(levels) else 0)
            if n:
                tasks.extend(envs[family].generate(n, seed=stable_seed(seed, split, family, level), difficulty=level))
    return tasks


def prompt_frame(tasks: Sequence[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"prompt_id": t.task_id, "family": t.family, "difficulty": int(t.difficulty), "prompt": t.prompt,
          "answer": t.answer, "payload": t.payload} for t in tasks],
        columns=["prompt_id", "family", "difficulty", "prompt", "answer", "payload"],
    )


def candidate_frame(envs: Mapping[str, Any], tasks: Sequence[Any], *, seed: int, n: int) -> pd.DataFrame:
    rows = []
    for task in tasks:
        for idx, cand in enumerate(envs[task.family].reference_responses(task, seed=stable_seed(seed, task.task_id), n=n)):
            rows.append({"prompt_id": task.task_id, "candidate_idx": idx, "family": task.family,
                         "difficulty": int(task.difficulty), "prompt": task.prompt, "response": cand.text,
                         "style": cand.style, "correct": bool(cand.correct), "n_chars": len(cand.text)})
    return pd.DataFrame(rows, columns=["prompt_id", "candidate_idx", "family", "difficulty", "prompt", "response",
                                       "style", "correct", "n_chars"])


def sft_frame(candidates: pd.DataFrame) -> pd.DataFrame:
    """One full-length correct response per prompt: the step-by-step ("cot") one, else the longest correct.

    This is the *plain* SFT data; shortest-correct selection happens in post-training, measured against it.
    """
    correct = candidates[candidates["correct"]].copy()
    correct["rank"] = (correct["style"] != "cot").astype(int)
    correct = correct.sort_values(["prompt_id", "rank", "n_chars", "candidate_idx"], ascending=[True, True, False, True])
    chosen = correct.drop_duplicates("prompt_id", keep="first")
    return chosen[["prompt_id", "family", "difficulty", "prompt", "response", "style", "correct", "n_chars"]].reset_index(drop=True)


def example_pages(envs: Mapping[str, Any], tasks: Sequence[Any], *, seed: int) -> list[dict[str, Any]]:
    """Raw pre-training documents: pages of EXAMPLES_PER_PAGE solved examples of one family.

    Each example is the prompt with its step-by-step correct response, so the base model has seen every
    format (answer lines, tool calls and results) before post-training.
    """
    by_family: dict[str, list[str]] = {}
    for task in tasks:
        # The first candidate of a set is the verified step-by-step one; asking for one verifies one.
        [first] = envs[task.family].reference_responses(task, seed=stable_seed(seed, "page", task.task_id), n=1)
        if first.correct:
            by_family.setdefault(task.family, []).append(task.prompt + first.text)
    pages = []
    for family, examples in by_family.items():
        for p in range(0, len(examples), EXAMPLES_PER_PAGE):
            pages.append({"doc_id": f"env:{family}:page{p // EXAMPLES_PER_PAGE}", "source": f"env-{family}",
                          "text": "\n".join(examples[p:p + EXAMPLES_PER_PAGE])})
    return pages
