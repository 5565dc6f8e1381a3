"""Environment-generated tables: eval / RL prompt sets, SFT examples, verified candidate responses,
and packed example pages for the pre-training mix. Every split has its own derived seed."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from configs.data import EnvironmentsConfig
from corpus.sources import stable_seed

EXAMPLES_PER_PAGE = 16


def generate_tasks(
    envs: Mapping[str, Any], cfg: EnvironmentsConfig, *, split: str, seed: int, per_family: int
) -> list[Any]:
    """``per_family`` tasks for each family, spread evenly over the configured difficulties.

    Easy levels hold few distinct tasks (single-digit arithmetic has a few hundred); what a level cannot
    supply is asked of the other levels (a larger request extends the same seeded sequence, so earlier
    tasks stay), and a family that runs out everywhere is an error.
    """
    levels = list(range(cfg.min_difficulty, cfg.max_difficulty + 1))
    tasks: list[Any] = []
    for family in cfg.families:

        def draw(level: int, n: int, env: Any = envs[family], family: str = family) -> list[Any]:
            return (
                env.generate(n, seed=stable_seed(seed, split, family, level), difficulty=level, allow_fewer=True)
                if n
                else []
            )

        asked = {
            lv: per_family // len(levels) + (1 if i < per_family % len(levels) else 0) for i, lv in enumerate(levels)
        }
        got = {lv: draw(lv, n) for lv, n in asked.items()}
        short = per_family - sum(len(g) for g in got.values())
        for lv in levels:
            if short and len(got[lv]) == asked[lv]:
                got[lv] = draw(lv, asked[lv] + short)
                short = per_family - sum(len(g) for g in got.values())
        if short:
            raise ValueError(
                f"{family}: {per_family} {split} tasks asked, only {per_family - short} distinct tasks "
                f"exist at difficulties {levels[0]}..{levels[-1]}; ask for fewer or raise max_difficulty"
            )
        tasks.extend(t for lv in levels for t in got[lv])
    return tasks


def prompt_frame(tasks: Sequence[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "prompt_id": t.task_id,
                "family": t.family,
                "difficulty": int(t.difficulty),
                "prompt": t.prompt,
                "answer": t.answer,
                "payload": t.payload,
            }
            for t in tasks
        ],
        columns=["prompt_id", "family", "difficulty", "prompt", "answer", "payload"],
    )


def _references(envs: Mapping[str, Any], tasks: Sequence[Any], seed: Callable[[Any], int], n: int) -> list[list[Any]]:
    """Reference candidates of every task, verified in parallel threads: code verification waits on
    sandbox subprocesses, so threads overlap them; results keep the task order."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda t: envs[t.family].reference_responses(t, seed=seed(t), n=n), tasks))


def candidate_frame(envs: Mapping[str, Any], tasks: Sequence[Any], *, seed: int, n: int) -> pd.DataFrame:
    rows = []
    all_refs = _references(envs, tasks, lambda t: stable_seed(seed, t.task_id), n)
    for task, refs in zip(tasks, all_refs, strict=True):
        for idx, cand in enumerate(refs):
            rows.append(
                {
                    "prompt_id": task.task_id,
                    "candidate_idx": idx,
                    "family": task.family,
                    "difficulty": int(task.difficulty),
                    "prompt": task.prompt,
                    "response": cand.text,
                    "style": cand.style,
                    "correct": bool(cand.correct),
                    "n_chars": len(cand.text),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "prompt_id",
            "candidate_idx",
            "family",
            "difficulty",
            "prompt",
            "response",
            "style",
            "correct",
            "n_chars",
        ],
    )


def sft_frame(candidates: pd.DataFrame) -> pd.DataFrame:
    """One full-length correct response per prompt: the step-by-step ("cot") one, else the longest correct.

    This is the *plain* SFT data; shortest-correct selection happens in post-training, measured against it.
    """
    correct = candidates[candidates["correct"]].copy()
    correct["rank"] = (correct["style"] != "cot").astype(int)
    correct = correct.sort_values(
        ["prompt_id", "rank", "n_chars", "candidate_idx"], ascending=[True, True, False, True]
    )
    chosen = correct.drop_duplicates("prompt_id", keep="first")
    return chosen[
        ["prompt_id", "family", "difficulty", "prompt", "response", "style", "correct", "n_chars"]
    ].reset_index(drop=True)


def example_pages(envs: Mapping[str, Any], tasks: Sequence[Any], *, seed: int, eos: str) -> list[dict[str, Any]]:
    """Raw pre-training documents: pages of EXAMPLES_PER_PAGE solved examples of one family.

    Each example is the prompt with its step-by-step correct response, so the base model has seen every
    format (answer lines, tool calls and results) before post-training. Examples are separated by the EOS
    token's text (the tokenizer maps it to the EOS id), so the model learns to stop after its answer.
    """
    by_family: dict[str, list[str]] = {}
    # The first candidate of a set is the verified step-by-step one; asking for one verifies one.
    firsts = _references(envs, tasks, lambda t: stable_seed(seed, "page", t.task_id), 1)
    for task, [first] in zip(tasks, firsts, strict=True):
        if first.correct:
            by_family.setdefault(task.family, []).append(task.prompt + first.text)
    pages = []
    for family, examples in by_family.items():
        for p in range(0, len(examples), EXAMPLES_PER_PAGE):
            pages.append(
                {
                    "doc_id": f"env:{family}:page{p // EXAMPLES_PER_PAGE}",
                    "source": f"env-{family}",
                    "text": eos.join(examples[p : p + EXAMPLES_PER_PAGE]),
                }
            )
    return pages
