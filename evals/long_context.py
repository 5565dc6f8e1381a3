"""Long-context retrieval: a pass key hidden in a generated haystack, at several prompt lengths (up to and
beyond the trained context) and needle depths.

A haystack is filler prose from a deterministic generator (no digits, so the key is the only number) with
one needle sentence, ``The pass key of <name> is <5 digits>.``, placed after ``round(depth * sentences)``
filler sentences, then the question. Prompts are as long as fits in ``length`` tokens of the given
tokenizer. Everything follows from (length, depth, seed), so context-extension training can draw its data
from ``make_haystack`` too. A response is correct when the first number in it is the key: the format is
not what this measures.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from configs.evaluation import RetrievalConfig
from data_contracts.evaluation import RetrievalRow
from environments.names import invented_names
from inference.sampling import SamplingParams

HEADER = "[recall] Find the pass key in the text.\n"
SUBJECTS = (
    "the old river", "a quiet village", "the northern road", "the grey market", "a patient farmer",
    "the tall lighthouse", "the morning wind", "a small boat", "the stone bridge", "a tired traveller",
    "the green valley", "the harbour bell", "a wandering goat", "the night train", "the silver lake",
)  # fmt: skip
VERBS = (
    "passes", "watches", "follows", "remembers", "crosses", "shelters", "greets", "leaves", "circles",
    "waits for", "sings to", "looks over",
)  # fmt: skip
OBJECTS = (
    "the sleeping town", "the distant hills", "a field of barley", "the crooked fence", "the empty square",
    "the winter orchard", "a line of poplars", "the open sea", "the narrow lane", "the old mill",
)  # fmt: skip
TAILS = (
    "", "at dawn", "after the rain", "without a sound", "in the long summer", "before the storm",
    "as it always has", "under a pale sky", "when the bells ring",
)  # fmt: skip
FILLER_WORDS = frozenset(w for part in (SUBJECTS, VERBS, OBJECTS, TAILS) for phrase in part for w in phrase.split())
_FIRST_NUMBER = re.compile(r"\d+")
# The random stream evaluation haystacks come from ("haystack": what every earlier evaluation drew).
EVAL_NAMESPACE = "haystack"

TokenizerOrLenFn = Any  # an object whose ``encode(text)`` returns ids (or an Encoding), or ``str -> int``


def _length_fn(tokenizer_or_len_fn: TokenizerOrLenFn) -> Callable[[str], int]:
    encode = getattr(tokenizer_or_len_fn, "encode", None)
    if encode is None:
        return tokenizer_or_len_fn

    def count(text: str) -> int:
        ids = encode(text)
        # ``tokenizers.Tokenizer.encode`` returns an Encoding; engines and HF tokenizers return the ids.
        return len(getattr(ids, "ids", ids))

    return count


def filler_sentence(rng: random.Random) -> str:
    tail = rng.choice(TAILS)
    sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{' ' + tail if tail else ''}."
    return sentence[0].upper() + sentence[1:]


@dataclass(frozen=True, kw_only=True)
class Haystack:
    prompt: str
    answer: str
    length: int
    depth: float
    prompt_tokens: int
    needle_index: int  # filler sentences before the needle
    name: str  # whose pass key the needle states


def _render(filler: Sequence[str], depth: float, needle: str, question: str) -> tuple[str, int]:
    cut = round(depth * len(filler))
    text = " ".join([*filler[:cut], needle, *filler[cut:]])
    return f"{HEADER}{text}\n{question}", cut


def haystack(
    tokenizer_or_len_fn: TokenizerOrLenFn, length: int, depth: float, seed: int, *, namespace: str = EVAL_NAMESPACE
) -> Haystack:
    """The longest haystack of at most ``length`` tokens for (length, depth, seed); see the module docstring.
    ``namespace`` seeds a separate stream: training data (``corpus.haystack``) never draws the evaluation's."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1], got {depth}")
    count = _length_fn(tokenizer_or_len_fn)
    rng = random.Random(f"{namespace}|{seed}|{length}|{depth}")
    name = invented_names(rng, 1, avoid=FILLER_WORDS)[0].capitalize()
    key = str(rng.randint(10_000, 99_999))
    needle, question = f"The pass key of {name} is {key}.", f"What is the pass key of {name}?\n"
    bare = count(_render([], depth, needle, question)[0])
    if bare > length:
        raise ValueError(f"a haystack needs at least {bare} tokens for its header, needle and question; {length} asked")
    # Sentence costs add up to about the joined length; the exact count is checked after assembly.
    filler: list[str] = []
    used = bare
    while True:
        sentence = filler_sentence(rng)
        cost = count(" " + sentence)
        if used + cost > length:
            break
        filler.append(sentence)
        used += cost
    prompt, cut = _render(filler, depth, needle, question)
    while count(prompt) > length:
        filler.pop()
        prompt, cut = _render(filler, depth, needle, question)
    return Haystack(
        prompt=prompt, answer=key, length=length, depth=depth, prompt_tokens=count(prompt), needle_index=cut, name=name
    )


def make_haystack(
    tokenizer_or_len_fn: TokenizerOrLenFn, length: int, depth: float, seed: int, *, namespace: str = EVAL_NAMESPACE
) -> tuple[str, str]:
    """(prompt, answer): a pass-key haystack of at most ``length`` tokens, the needle at ``depth``."""
    stack = haystack(tokenizer_or_len_fn, length, depth, seed, namespace=namespace)
    return stack.prompt, stack.answer


def eval_haystacks(tokenizer_or_len_fn: TokenizerOrLenFn, cfg: RetrievalConfig, seed: int = 0) -> list[Haystack]:
    """Every haystack ``evaluate_retrieval(cfg, seed=seed)`` reads, in its order."""
    return [
        haystack(tokenizer_or_len_fn, length, depth, seed * cfg.samples_per_cell + s)
        for length in cfg.lengths
        for depth in cfg.depths
        for s in range(cfg.samples_per_cell)
    ]


def retrieved(response: str, answer: str) -> bool:
    """The first number in the response is the key."""
    found = _FIRST_NUMBER.search(response)
    return found is not None and found.group() == answer


def evaluate_retrieval(
    engine, cfg: RetrievalConfig, *, checkpoint: str, seed: int = 0, trained_context: int | None = None
) -> pd.DataFrame:
    """``RetrievalRow`` per (length, depth) of ``cfg``: ``cfg.samples_per_cell`` haystacks each, read by
    ``engine`` (its ``encode`` measures length, its ``generate`` answers greedily). Zero accuracy is a result,
    reported like any other."""
    cells = [(length, depth) for length in cfg.lengths for depth in cfg.depths]
    stacks = eval_haystacks(engine, cfg, seed)
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens, seed=seed)
    hits = [
        retrieved(g.text, s.answer)
        for g, s in zip(engine.generate([s.prompt for s in stacks], params), stacks, strict=True)
    ]
    rows = []
    for i, (length, depth) in enumerate(cells):
        cell = slice(i * cfg.samples_per_cell, (i + 1) * cfg.samples_per_cell)
        correct = sum(hits[cell])
        rows.append(
            {
                "checkpoint": checkpoint,
                "length": length,
                "depth": float(depth),
                "n": cfg.samples_per_cell,
                "correct": correct,
                "accuracy": correct / cfg.samples_per_cell,
                "prompt_tokens": sum(s.prompt_tokens for s in stacks[cell]) / cfg.samples_per_cell,
                "beyond_context": trained_context is not None and length > trained_context,
            }
        )
    return RetrievalRow.validate(pd.DataFrame(rows))
