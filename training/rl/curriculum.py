"""Prompts chosen by their pass rate (METHODS §6.3 Dynamic Pass Rating, §7.2's cold-start band), and the
stage's reward.

A prompt every sample solves, or none does, gives group-normalised advantages of 0: no learning signal. So
before RL the policy samples a few responses to a spread of each family's prompts (``probe_pass_rates``),
and ``select_prompts`` keeps, per family:

1. prompts whose pass rate lies inside [low, high], the hardest first (DPR prioritises the unstable ones);
2. if too few, the nearest below the band: highest pass rate first, then lowest difficulty — a family the
   tiny policy never solves (search, today) trains on its easiest prompts rather than on nothing;
3. last, those above the band (solved nearly always), least solved first.

The table it returns says, per prompt, its pass rate, band and whether it was chosen: the per-family
report of what the curriculum did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from environments import Task, Verdict
from training.objectives.rewards import compression_ratio
from training.rl.records import RolloutRecord

RATE_COLUMNS = ("prompt_id", "family", "difficulty", "samples", "pass_rate")


def probe_pass_rates(
    engine: Any,
    envs: Mapping[str, Any],
    tasks: Sequence[Task],
    *,
    samples: int,
    params: Any,
    max_turns: int,
) -> pd.DataFrame:
    """Pass rate of each task over ``samples`` sampled multi-turn rollouts (one batched engine pass)."""
    from inference.rollout import rollout

    grouped = [t for t in tasks for _ in range(samples)]
    rolls = rollout(engine, envs, grouped, params, max_turns=max_turns)
    correct: dict[str, int] = {}
    for r in rolls:
        correct[r.task.task_id] = correct.get(r.task.task_id, 0) + int(
            envs[r.task.family].verify(r.task, r.text).correct
        )
    rows = [(t.task_id, t.family, t.difficulty, samples, correct[t.task_id] / samples) for t in tasks]
    return pd.DataFrame(rows, columns=list(RATE_COLUMNS))


def select_prompts(
    tasks: Sequence[Task], rates: pd.DataFrame, *, per_family: int, low: float, high: float
) -> tuple[list[Task], pd.DataFrame]:
    """(chosen tasks, ``rates`` with ``band`` and ``chosen`` columns); the order of the module docstring."""
    table = rates.copy()
    table["band"] = "in_band"
    table.loc[table["pass_rate"] < low, "band"] = "below"
    table.loc[table["pass_rate"] > high, "band"] = "above"
    rank = {"in_band": 0, "below": 1, "above": 2}
    # One sort key for all three bands: in band and above, the lower pass rate first; below, the higher first.
    table["_band"] = table["band"].map(rank)
    table["_rate"] = table["pass_rate"].where(table["band"] != "below", -table["pass_rate"])
    ordered = table.sort_values(["family", "_band", "_rate", "difficulty", "prompt_id"], kind="stable")
    chosen_ids = set(ordered.groupby("family", sort=False).head(per_family)["prompt_id"])
    table["chosen"] = table["prompt_id"].isin(chosen_ids)
    by_id = {t.task_id: t for t in tasks}
    chosen = [by_id[i] for i in ordered["prompt_id"] if i in chosen_ids]
    return chosen, table.drop(columns=["_band", "_rate"])


def family_report(table: pd.DataFrame) -> dict[str, float]:
    """``curriculum.<family>.probe_pass_rate|chosen_pass_rate|chosen_in_band|chosen_difficulty`` floats."""
    out = {}
    for family, part in table.groupby("family", sort=True):
        chosen = part[part["chosen"]]
        out[f"curriculum.{family}.probe_pass_rate"] = float(part["pass_rate"].mean())
        out[f"curriculum.{family}.chosen_pass_rate"] = float(chosen["pass_rate"].mean()) if len(chosen) else 0.0
        out[f"curriculum.{family}.chosen_in_band"] = float((chosen["band"] == "in_band").sum())
        out[f"curriculum.{family}.chosen_difficulty"] = float(chosen["difficulty"].mean()) if len(chosen) else 0.0
    return out


def repetition_reward(penalty: float, tau: float):
    """The stage's reward: 1 if verified correct else 0, minus ``penalty · max(0, (τ - cr) / τ)`` where cr is
    the zlib compression ratio of the transcript (METHODS §6.3: degenerate repetition compresses well)."""

    def reward(records: Sequence[RolloutRecord], verdicts: Sequence[Verdict]) -> list[float]:
        out = []
        for record, verdict in zip(records, verdicts, strict=True):
            ratio = compression_ratio(record.text)
            out.append((1.0 if verdict.correct else 0.0) - penalty * max(0.0, (tau - ratio) / tau))
        return out

    return reward
