"""Invented, pronounceable names for the generated worlds (fact corpus, lookup table).

Invented names keep the facts unknowable without the tools, so a correct answer shows that the model
searched or looked up rather than recalled something from the pre-training text of the machine.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "m")


def invented_names(rng: random.Random, count: int, *, avoid: Iterable[str] = ()) -> list[str]:
    """``count`` distinct lowercase names of two or three syllables, none of them in ``avoid``."""
    taken = {word.lower() for word in avoid}
    names: list[str] = []
    while len(names) < count:
        syllables = rng.choice((2, 2, 3))
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names
