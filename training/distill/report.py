"""Evaluation of the student and its teachers on the same prompts, and the per-family before -> after vs
teacher comparison the stage reports (accuracy and tokens per correct answer)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from configs.distill import AGENTIC_FAMILIES, DistillConfig

STUDENT_BEFORE, STUDENT_AFTER = "student_before", "student_after"


def teacher_label(name: str) -> str:
    return f"teacher_{name}"


def evaluate_model(model, tokenizer, envs, tasks: Sequence[Any], cfg: DistillConfig, checkpoint: str) -> pd.DataFrame:
    """The harness's ``EvalResult`` rows of greedy rollouts of ``model`` on ``tasks``."""
    from corpus.tokenizer import EOS, PAD
    from evals.harness import evaluate_policy
    from inference.native import NativeEngine
    from inference.sampling import SamplingParams

    engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
    summary, _ = evaluate_policy(
        engine,
        envs,
        tasks,
        checkpoint=checkpoint,
        params=SamplingParams(temperature=0.0, max_new_tokens=cfg.eval.max_new_tokens),
        max_turns=cfg.eval.max_tool_turns,
    )
    return summary


def _value(summary: pd.DataFrame, checkpoint: str, family: str, column: str) -> float:
    hit = summary[(summary["checkpoint"] == checkpoint) & (summary["family"] == family)]
    return float(hit[column].iloc[0]) if len(hit) else math.nan


def family_comparison(summary: pd.DataFrame, routing: Mapping[str, str]) -> pd.DataFrame:
    """One row per evaluated family: student before, after, and the teacher ``routing`` gives the family
    (accuracy and mean tokens per correct answer; NaN where a family has no teacher or no correct answer)."""
    rows = []
    for family in sorted(set(summary["family"]) - {"all"}):
        teacher = routing.get(family)
        row: dict[str, Any] = {"family": family, "teacher": teacher or ""}
        for column, name in (("accuracy", "accuracy"), ("mean_tokens_correct", "tokens_per_correct")):
            row[f"{name}_before"] = _value(summary, STUDENT_BEFORE, family, column)
            row[f"{name}_after"] = _value(summary, STUDENT_AFTER, family, column)
            row[f"{name}_teacher"] = _value(summary, teacher_label(teacher), family, column) if teacher else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_metrics(comparison: pd.DataFrame, summary: pd.DataFrame) -> dict[str, float]:
    """``family.<f>.<metric>_<before|after|teacher>``; over every prompt, how the student's accuracy and
    tokens per correct answer moved (``all.*``); ``matched.tokens_per_correct_ratio``, the mean after/before
    ratio over the families solved both times (the issue's +10 % token-efficiency bound reads this one);
    ``agentic.accuracy_gain``, the mean accuracy change over the agentic families."""
    out = {}
    for row in comparison.to_dict("records"):
        for key, value in row.items():
            if key not in ("family", "teacher"):
                out[f"family.{row['family']}.{key}"] = float(value)
    for column, name in (("accuracy", "accuracy"), ("mean_tokens_correct", "tokens_per_correct")):
        before, after = (_value(summary, c, "all", column) for c in (STUDENT_BEFORE, STUDENT_AFTER))
        out[f"all.{name}_before"], out[f"all.{name}_after"] = before, after
    before, after = out["all.tokens_per_correct_before"], out["all.tokens_per_correct_after"]
    out["all.tokens_per_correct_ratio"] = after / before if before > 0 else math.nan
    # Over "all", tokens per correct answer also moves when the mix of solved families changes (a newly
    # solved tool task is longer than a math answer); the matched ratio compares like with like.
    both = comparison.dropna(subset=["tokens_per_correct_before", "tokens_per_correct_after"])
    both = both[both["tokens_per_correct_before"] > 0]
    ratios = both["tokens_per_correct_after"] / both["tokens_per_correct_before"]
    out["matched.tokens_per_correct_ratio"] = float(ratios.mean()) if len(ratios) else math.nan
    agentic = comparison[comparison["family"].isin(AGENTIC_FAMILIES)]
    if len(agentic):
        out["agentic.accuracy_gain"] = float((agentic["accuracy_after"] - agentic["accuracy_before"]).mean())
    return out
