"""The generated fact corpus behind the ``search`` tool, and its ranking.

Lands with invented names each have a capital, a river and a king (names unique across the whole
corpus, so a value identifies its land) and one neighbour (a single cycle through all lands). Facts
read ``The capital of Varnel is Osk.``. Ranking is token overlap: content words (stop words dropped)
plus word bigrams (stop words kept), so ``neighbor of Varnel`` prefers ``The neighbor of Varnel is
Kesh.`` over ``The neighbor of Dorn is Varnel.``; ties go to the earlier fact.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from environments.names import invented_names
from environments.tools import ToolError, check_keys, str_arg

CORPUS_SEED = 1226
LANDS = 256
ATTRIBUTES = ("capital", "river", "king")  # name-valued and unique: they can be asked in reverse
RELATION = "neighbor"
STOPWORDS = frozenset({"the", "of", "is", "a", "an", "what", "which", "who", "has", "land", "whose"})
DEFAULT_K = 1
MAX_K = 5

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Fact:
    subject: str
    attribute: str
    value: str

    @property
    def text(self) -> str:
        return f"The {self.attribute} of {self.subject} is {self.value}."


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _features(text: str) -> set[Any]:
    words = _tokens(text)
    return {w for w in words if w not in STOPWORDS} | set(itertools.pairwise(words))


class FactCorpus:
    """The facts, the lookups used to write tasks, and the search the tool runs."""

    def __init__(self, seed: int = CORPUS_SEED, lands: int = LANDS) -> None:
        rng = random.Random(seed)
        avoid = STOPWORDS | set(ATTRIBUTES) | {RELATION}
        names = [n.capitalize() for n in invented_names(rng, lands * (1 + len(ATTRIBUTES)), avoid=avoid)]
        self.lands = names[:lands]
        order = rng.sample(self.lands, lands)
        neighbor = {land: order[(i + 1) % lands] for i, land in enumerate(order)}
        self.facts: list[Fact] = []
        for i, land in enumerate(self.lands):
            values = [names[lands * (a + 1) + i] for a in range(len(ATTRIBUTES))]
            self.facts += [Fact(land, attr, value) for attr, value in zip(ATTRIBUTES, values, strict=True)]
            self.facts.append(Fact(land, RELATION, neighbor[land]))
        self.value = {(f.subject, f.attribute): f.value for f in self.facts}
        self.owner = {(f.attribute, f.value): f.subject for f in self.facts if f.attribute in ATTRIBUTES}
        self._features = [_features(f.text) for f in self.facts]
        self._index: dict[Any, list[int]] = defaultdict(list)
        for i, features in enumerate(self._features):
            for feature in features:
                self._index[feature].append(i)

    def search(self, query: str, k: int = DEFAULT_K) -> list[Fact]:
        """The ``k`` best facts sharing at least one content word or bigram with ``query``."""
        wanted = _features(query)
        scores: dict[int, int] = defaultdict(int)
        for feature in wanted:
            for i in self._index.get(feature, ()):
                scores[i] += 1
        best = heapq.nsmallest(k, scores, key=lambda i: (-scores[i], i))
        return [self.facts[i] for i in best]

    def documents(self) -> list[str]:
        """One document per land: its four facts."""
        by_land: dict[str, list[str]] = defaultdict(list)
        for fact in self.facts:
            by_land[fact.subject].append(fact.text)
        return [" ".join(by_land[land]) for land in self.lands]

    def search_tool(self, args: Mapping[str, Any]) -> str:
        """``{"query": "capital of Varnel"}`` (optional ``"k"``) -> ``"The capital of Varnel is Osk."``."""
        check_keys(args, ("query",), ("k",))
        k = args.get("k", DEFAULT_K)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ToolError(f"argument 'k' must be a whole number from 1 to {MAX_K}")
        facts = self.search(str_arg(args, "query")[:200], k)
        return " ".join(f.text for f in facts) if facts else "no results"
