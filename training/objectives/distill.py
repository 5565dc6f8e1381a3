"""Shortest-correct-response distillation data (METHODS §6.2).

For every prompt, of several candidate responses keep the shortest *verified-correct* one, after
pruning its over-reflective segments: redundant lines (re-checks, repeated steps or tool calls) that
come after the answer was first derived, keeping the final ``Answer:`` line
(``segments.prune_after_answer``). A pruned text replaces the original only if it still verifies, so
pruning can never turn a correct response into a wrong one (or drop a tool call a task requires).
Prompts without a correct candidate are dropped. Length is measured by ``length_fn`` (characters by
default; pass a token counter to report tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from statistics import fmean
from typing import Any

from training.objectives.segments import prune_after_answer

Verify = Callable[[Hashable, str], bool]


def select_shortest_correct(
    candidates: Iterable[Mapping[str, Any]],
    verify: Verify,
    *,
    length_fn: Callable[[str], int] = len,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Select one pruned, verified response per prompt.

    ``candidates``: rows with ``prompt_id`` and ``text`` (other keys are ignored); ``verify(prompt_id,
    text)`` says whether a text is a correct response to that prompt. Returns rows ``{prompt_id, text,
    original_text, length, pruned_length}`` in first-seen prompt order (ties in length go to the earlier
    candidate), and stats: prompt counts, ``mean_pruned_length`` (removed from the kept responses by
    pruning) and ``mean_length_removed`` (mean correct-candidate length minus the kept length: what
    selection plus pruning saves against sampling any correct response).
    """
    by_prompt: dict[Hashable, list[str]] = {}
    for row in candidates:
        by_prompt.setdefault(row["prompt_id"], []).append(row["text"])

    selected: list[dict[str, Any]] = []
    pruned_lengths: list[int] = []
    removed_lengths: list[float] = []
    for prompt_id, texts in by_prompt.items():
        correct = [text for text in texts if verify(prompt_id, text)]
        if not correct:
            continue
        options = []
        for text in correct:
            pruned = prune_after_answer(text)
            kept = pruned if pruned != text and verify(prompt_id, pruned) else text
            options.append((length_fn(kept), kept, text))
        length, text, original = min(options, key=lambda option: option[0])
        pruned_length = length_fn(original) - length
        selected.append(
            {
                "prompt_id": prompt_id,
                "text": text,
                "original_text": original,
                "length": length,
                "pruned_length": pruned_length,
            }
        )
        pruned_lengths.append(pruned_length)
        removed_lengths.append(fmean(length_fn(t) for t in correct) - length)

    stats = {
        "prompts": float(len(by_prompt)),
        "prompts_kept": float(len(selected)),
        "prompts_without_correct": float(len(by_prompt) - len(selected)),
        "mean_pruned_length": fmean(pruned_lengths) if pruned_lengths else 0.0,
        "mean_length_removed": fmean(removed_lengths) if removed_lengths else 0.0,
    }
    return selected, stats
