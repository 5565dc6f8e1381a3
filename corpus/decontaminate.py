"""Decontamination of training text against the held-out evaluation sets.

Two checks, because the training data has two kinds of text:
* prompts (SFT, candidates, RL): a training prompt equal to an eval prompt after whitespace
  normalisation is a direct leak;
* free text (pre-training documents): any shared word n-gram with an eval item (prompt + answer).
Templated environments repeat the same wording across items ("What is the capital of"), so n-grams
shared by many eval items are template, not content, and are ignored — like GPT-3's decontamination
ignoring frequent n-grams; how many were ignored is reported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def normalise_prompt(prompt: str) -> str:
    return " ".join(prompt.split()).lower()


@dataclass(frozen=True)
class EvalIndex:
    n: int
    prompts: frozenset[str]
    content_ngrams: frozenset[tuple[str, ...]]
    template_ngrams_ignored: int

    @classmethod
    def build(
        cls,
        eval_items: Iterable[tuple[str, str]],
        *,
        n: int,
        template_min_items: int = 3,
        template_fraction: float = 0.02,
    ) -> EvalIndex:
        """Index ``(prompt, answer text)`` eval items; n-grams in many items count as template."""
        items = list(eval_items)
        per_item = [ngrams(words(f"{p} {a}"), n) for p, a in items]
        frequency = Counter(g for grams in per_item for g in grams)
        limit = max(template_min_items, int(template_fraction * len(items)))
        template = {g for g, c in frequency.items() if c >= limit}
        content = frozenset(g for g in frequency if g not in template)
        return cls(
            n=n,
            prompts=frozenset(normalise_prompt(p) for p, _ in items),
            content_ngrams=content,
            template_ngrams_ignored=len(template),
        )

    def prompt_leak(self, prompt: str) -> bool:
        return normalise_prompt(prompt) in self.prompts

    def shared_ngram(self, text: str) -> tuple[str, ...] | None:
        """The first eval content n-gram that ``text`` contains, or None."""
        tokens = words(text)
        for i in range(len(tokens) - self.n + 1):
            gram = tuple(tokens[i : i + self.n])
            if gram in self.content_ngrams:
                return gram
        return None
