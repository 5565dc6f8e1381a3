"""Every checkpoint of a run (base, migrated, post-trained, RL, distilled: whichever exist) measured the same
way — same held-out prompts, same sampling, same seeds — into one long ``ComparisonRow`` table:

    per family   accuracy (greedy), pass@k (sampled), format_rate, tokens_per_answer, tokens_per_correct;
                 tool families also tool_calls_per_episode and tool_calls_per_success
    "agentic"    agentic_success, tool_calls_per_episode, tool_calls_per_success over the multi-turn tool
                 families together (an episode succeeds when its verified answer is correct; the verifier
                 already demands that the task's tools were called and replays every call)
    "all"        the per-family metrics over every prompt, heldout_loss, and ``mismatch.*`` where the RL
                 stage's training-inference mismatch summary is given for that checkpoint

pass@k is the unbiased estimator of Chen et al. (2021) from n samples per prompt of which c are correct,

    pass@k = 1 - C(n - c, k) / C(n, k),

averaged over prompts; it needs k <= n.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs.evaluation import EvaluateConfig
from data_contracts.evaluation import ComparisonRow
from evals.harness import heldout_loss, score_rollouts
from inference.rollout import rollout
from inference.sampling import SamplingParams


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) as a product of k ratios: exact enough, and no huge binomials.
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _row(checkpoint: str, family: str, metric: str, value: float, n: int) -> dict[str, Any]:
    return {"checkpoint": checkpoint, "family": family, "metric": metric, "value": float(value), "n": int(n)}


def _mean_over(values: pd.Series) -> tuple[float, int]:
    return (float(values.mean()) if len(values) else math.nan), len(values)


def answer_rows(checkpoint: str, family: str, greedy: pd.DataFrame, *, tools: bool) -> list[dict[str, Any]]:
    """Greedy-decode metrics of one family (or several, for "all") from scored rollouts."""
    correct = greedy[greedy["correct"]]
    rows = [
        _row(checkpoint, family, "accuracy", greedy["correct"].mean(), len(greedy)),
        _row(checkpoint, family, "format_rate", greedy["format_ok"].mean(), len(greedy)),
        _row(checkpoint, family, "tokens_per_answer", greedy["tokens"].mean(), len(greedy)),
        _row(checkpoint, family, "tokens_per_correct", *_mean_over(correct["tokens"])),
    ]
    if tools:
        rows += [
            _row(checkpoint, family, "tool_calls_per_episode", greedy["tool_calls"].mean(), len(greedy)),
            _row(checkpoint, family, "tool_calls_per_success", *_mean_over(correct["tool_calls"])),
        ]
    return rows


def pass_at_k_rows(checkpoint: str, family: str, sampled: pd.DataFrame, ks: Sequence[int]) -> list[dict[str, Any]]:
    """pass@k for each k, averaged over the prompts of ``sampled`` (every prompt sampled equally often)."""
    per_prompt = sampled.groupby("prompt_id")["correct"].agg(["size", "sum"])
    return [
        _row(
            checkpoint,
            family,
            f"pass@{k}",
            np.mean([pass_at_k(int(n), int(c), k) for n, c in zip(per_prompt["size"], per_prompt["sum"], strict=True)]),
            len(per_prompt),
        )
        for k in ks
    ]


def metric_rows(
    checkpoint: str,
    greedy: pd.DataFrame,
    sampled: pd.DataFrame | None,
    *,
    pass_k: Sequence[int],
    tool_families: Sequence[str],
) -> list[dict[str, Any]]:
    """Every per-family, "agentic" and "all" metric from scored greedy rollouts and scored samples."""
    rows: list[dict[str, Any]] = []
    groups = [(family, greedy["family"] == family) for family in sorted(greedy["family"].unique())]
    groups.append(("all", pd.Series(True, index=greedy.index)))
    for family, mask in groups:
        rows += answer_rows(checkpoint, family, greedy[mask], tools=family in tool_families)
        if sampled is not None and pass_k:
            picked = sampled if family == "all" else sampled[sampled["family"] == family]
            rows += pass_at_k_rows(checkpoint, family, picked, pass_k)
    episodes = greedy[greedy["family"].isin(tool_families)]
    if len(episodes):
        successes = episodes[episodes["correct"]]
        rows += [
            _row(checkpoint, "agentic", "agentic_success", episodes["correct"].mean(), len(episodes)),
            _row(checkpoint, "agentic", "tool_calls_per_episode", episodes["tool_calls"].mean(), len(episodes)),
            _row(checkpoint, "agentic", "tool_calls_per_success", *_mean_over(successes["tool_calls"])),
        ]
    return rows


def mismatch_rows(checkpoint: str, summary: Mapping[str, float]) -> list[dict[str, Any]]:
    """The RL stage's training-inference mismatch summary (flat name -> number) as ``mismatch.*`` rows."""
    return [_row(checkpoint, "all", f"mismatch.{name}", value, 0) for name, value in sorted(summary.items())]


@dataclass(frozen=True, kw_only=True)
class CheckpointEval:
    """One checkpoint's rows of the comparison table, and its greedy rollouts (with verdicts) for inspection."""

    rows: list[dict[str, Any]]
    rollouts: pd.DataFrame


def evaluate_checkpoint(
    engine,
    envs: Mapping[str, Any],
    tasks: Sequence[Any],
    cfg: EvaluateConfig,
    *,
    checkpoint: str,
    heldout_tokens: np.ndarray | None = None,
    mismatch: Mapping[str, float] | None = None,
) -> CheckpointEval:
    """Greedy rollouts, ``cfg.samples_per_prompt`` sampled rollouts per task for pass@k, held-out loss of
    ``engine.model`` when ``heldout_tokens`` is given. ``engine`` is any engine ``inference.rollout`` takes
    that also exposes the model it runs."""
    greedy_params = SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    greedy = score_rollouts(envs, rollout(engine, envs, tasks, greedy_params, max_turns=cfg.max_tool_turns))
    sampled = None
    if cfg.pass_k:
        params = SamplingParams(
            temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
        )
        # Each task's samples are consecutive rows, so each gets its own seed (the engine seeds row i with seed + i).
        repeated = [task for task in tasks for _ in range(cfg.samples_per_prompt)]
        sampled = score_rollouts(envs, rollout(engine, envs, repeated, params, max_turns=cfg.max_tool_turns))
    tool_families = [name for name, env in envs.items() if env.tool_names]
    rows = metric_rows(checkpoint, greedy, sampled, pass_k=cfg.pass_k, tool_families=tool_families)
    if heldout_tokens is not None:
        windows = min(cfg.heldout_windows, (len(heldout_tokens) - 1) // cfg.heldout_seq_len)
        loss = heldout_loss(engine.model, heldout_tokens, seq_len=cfg.heldout_seq_len, max_windows=cfg.heldout_windows)
        rows.append(_row(checkpoint, "all", "heldout_loss", loss, windows))
    if mismatch:
        rows += mismatch_rows(checkpoint, mismatch)
    return CheckpointEval(rows=rows, rollouts=greedy.assign(checkpoint=checkpoint))


def checkpoint_folder(folder: str | Path) -> Path:
    """``folder`` as a Path, once it is known to hold a model and its tokenizer, as the stages export them."""
    folder = Path(folder)
    missing = [
        name for name in ("config.json", "tokenizer.json", "tokenizer_config.json") if not (folder / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}: pass a checkpoint folder a stage exported (it holds the "
            "model and a copy of the curated tokenizer)"
        )
    return folder


def load_engine(folder: str | Path, *, base=None, batch_size: int = 64):
    """A ``NativeEngine`` on the checkpoint folder's model (either layout) and the tokenizer stored beside
    it; end-of-sequence and padding tokens are read from its ``tokenizer_config.json``."""
    from tokenizers import Tokenizer

    from inference.native import NativeEngine
    from kernels.dispatch import place
    from model import load_checkpoint

    folder = checkpoint_folder(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    special = json.loads((folder / "tokenizer_config.json").read_text())
    ids = {key: tokenizer.token_to_id(special.get(key) or "") for key in ("eos_token", "pad_token")}
    if None in ids.values():
        raise ValueError(f"{folder}/tokenizer_config.json: eos_token and pad_token must name tokens of the tokenizer")
    # Evaluated where the stages train and generate (the one device decision), not wherever it was loaded.
    model = place(load_checkpoint(folder, base=base)).eval()
    return NativeEngine(model, tokenizer, eos_id=ids["eos_token"], pad_id=ids["pad_token"], batch_size=batch_size)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """``table``: ComparisonRow rows of every checkpoint; ``rollouts``: their greedy rollouts;
    ``retrieval``: RetrievalRow rows (empty when the config's retrieval grid is)."""

    table: pd.DataFrame
    rollouts: pd.DataFrame
    retrieval: pd.DataFrame


def compare_checkpoints(
    checkpoints: Mapping[str, str | Path],
    envs: Mapping[str, Any],
    tasks: Sequence[Any],
    cfg: EvaluateConfig,
    *,
    base=None,
    heldout_tokens: np.ndarray | None = None,
    mismatch: Mapping[str, Mapping[str, float]] | None = None,
    trained_context: Mapping[str, int] | None = None,
) -> Comparison:
    """Evaluate each named checkpoint folder in turn (one model in memory at a time).

    ``base``: the ``ModelConfig`` supplying what a config.json does not carry; ``mismatch``: checkpoint name
    -> the RL stage's mismatch summary; ``trained_context``: checkpoint name -> the longest context its
    training used (context extension lengthens it from the migration on), which marks retrieval lengths beyond it."""
    from evals.long_context import evaluate_retrieval

    unknown = sorted(set(mismatch or {}) - set(checkpoints))
    if unknown:
        raise ValueError(f"mismatch summary for {unknown[0]!r}, which is not among the checkpoints {list(checkpoints)}")
    rows: list[dict[str, Any]] = []
    rollouts, retrieval = [], []
    for name, folder in checkpoints.items():
        engine = load_engine(folder, base=base)
        result = evaluate_checkpoint(
            engine,
            envs,
            tasks,
            cfg,
            checkpoint=name,
            heldout_tokens=heldout_tokens,
            mismatch=(mismatch or {}).get(name),
        )
        rows += result.rows
        rollouts.append(result.rollouts)
        if cfg.retrieval.lengths:
            retrieval.append(
                evaluate_retrieval(
                    engine,
                    cfg.retrieval,
                    checkpoint=name,
                    seed=cfg.seed,
                    trained_context=(trained_context or {}).get(name),
                )
            )
        del engine
        gc.collect()
    from data_contracts.evaluation import RetrievalRow

    return Comparison(
        table=ComparisonRow.validate(pd.DataFrame(rows)),
        rollouts=pd.concat(rollouts, ignore_index=True),
        retrieval=RetrievalRow.validate(pd.concat(retrieval, ignore_index=True))
        if retrieval
        else pd.DataFrame(columns=list(RetrievalRow.to_schema().columns)),
    )


def grouped_bars(values: Mapping[str, Mapping[str, float]], *, title: str, ylabel: str) -> Any:
    """One group of bars per category (inner keys), one bar per series (outer keys); missing or NaN = no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = list(dict.fromkeys(c for series in values.values() for c in series))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / max(len(values), 1)
    for i, (label, series) in enumerate(values.items()):
        xs = np.arange(len(categories)) + i * width
        ax.bar(xs, [series.get(c, math.nan) for c in categories], width=width, label=label)
    ax.set_xticks(np.arange(len(categories)) + width * (len(values) - 1) / 2, categories)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def comparison_plots(table: pd.DataFrame, retrieval: pd.DataFrame | None = None) -> dict[str, Any]:
    """Figures by file stem: accuracy by family per checkpoint, tokens per correct answer per checkpoint,
    and (with a retrieval table) retrieval accuracy by length and by depth per checkpoint."""
    from lineage.plots import line_chart

    def by_checkpoint(metric: str) -> dict[str, dict[str, float]]:
        picked = table[table["metric"] == metric]
        return {
            name: dict(zip(g["family"], g["value"], strict=True))
            for name, g in picked.groupby("checkpoint", sort=False)
        }

    figures = {
        "accuracy_by_family": grouped_bars(by_checkpoint("accuracy"), title="greedy accuracy", ylabel="accuracy"),
        "tokens_per_correct": grouped_bars(
            by_checkpoint("tokens_per_correct"), title="tokens per correct answer", ylabel="model tokens"
        ),
    }
    if retrieval is not None and len(retrieval):
        for axis in ("length", "depth"):
            series = {}
            for name, g in retrieval.groupby("checkpoint", sort=False):
                mean = g.groupby(axis)["correct"].sum() / g.groupby(axis)["n"].sum()
                series[name] = (list(mean.index), list(mean.values))
            figures[f"retrieval_by_{axis}"] = line_chart(
                series, title=f"passkey retrieval by {axis}", xlabel=axis, ylabel="accuracy"
            )
    return figures
