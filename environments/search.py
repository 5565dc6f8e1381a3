"""The ``search`` family: answer questions about invented lands by searching a generated fact corpus.

Difficulty is the kind of question, i.e. the number of searches and whether a fact is read forwards
(attribute of a land) or backwards (the land with a given attribute):
1. ``What is the capital of Varnel?`` (1 search)
2. ``Which land has the river Tamu?`` (1 search, read backwards)
3. ``What is the king of the neighbor of Varnel?`` (2 searches)
4. ``What is the river of the land whose king is Bron?`` (2 searches, the first backwards)
5. ``What is the capital of the neighbor of the land whose king is Bron?`` (3 searches)
A correct response calls ``search`` and answers with the value; the corpus is also pre-training text
(``pretrain_documents``), but an answer without a search is not accepted.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import ClassVar

from configs.data import EnvironmentsConfig
from environments.agentic import PlanStep, ToolEnvironment, plan_draft
from environments.base import Draft, Task
from environments.facts import ATTRIBUTES, RELATION, Fact, FactCorpus
from environments.tools import ToolFn


class SearchEnvironment(ToolEnvironment):
    family: ClassVar[str] = "search"
    tag: ClassVar[str] = "search"
    tool_names: ClassVar[tuple[str, ...]] = ("search",)

    def __init__(self, cfg: EnvironmentsConfig) -> None:
        super().__init__(cfg)
        self.corpus = FactCorpus()
        self._tools: dict[str, ToolFn] = {"search": self.corpus.search_tool}

    @property
    def tools(self) -> Mapping[str, ToolFn]:
        return self._tools

    def _forward(self, land: str, attribute: str) -> PlanStep:
        fact = Fact(land, attribute, self.corpus.value[(land, attribute)])
        return self._searched(f"{attribute} of {land}", fact, fact.value, f"{attribute} of {land} = {fact.value}")

    def _backward(self, attribute: str, value: str) -> PlanStep:
        fact = Fact(self.corpus.owner[(attribute, value)], attribute, value)
        return self._searched(
            f"{attribute} is {value}", fact, fact.subject, f"land with {attribute} {value} = {fact.subject}"
        )

    def _searched(self, query: str, fact: Fact, value: str, note: str) -> PlanStep:
        """A search step that reads ``value`` off ``fact``, which the query must rank first."""
        step = self._step("search", {"query": query}, note)
        if step.value != fact.text:
            raise RuntimeError(f"search: query {query!r} ranks {step.value!r} above {fact.text!r}")
        return PlanStep(step.tool, step.args, value, note)

    def _draw(self, rng: random.Random, difficulty: int) -> Draft:
        land = rng.choice(self.corpus.lands)
        attribute = rng.choice(ATTRIBUTES)
        if difficulty == 1:
            attribute = rng.choice((*ATTRIBUTES, RELATION))
            return plan_draft(f"What is the {attribute} of {land}?", [self._forward(land, attribute)])
        if difficulty == 2:
            value = self.corpus.value[(land, attribute)]
            return plan_draft(f"Which land has the {attribute} {value}?", [self._backward(attribute, value)])
        if difficulty == 3:
            hop = self._forward(land, RELATION)
            return plan_draft(
                f"What is the {attribute} of the neighbor of {land}?", [hop, self._forward(hop.value, attribute)]
            )
        key = rng.choice([a for a in ATTRIBUTES if a != attribute])
        key_value = self.corpus.value[(land, key)]
        steps = [self._backward(key, key_value)]
        subject = "the land"
        if difficulty == 5:
            steps.append(self._forward(land, RELATION))
            subject = "the neighbor of the land"
        steps.append(self._forward(steps[-1].value, attribute))
        return plan_draft(f"What is the {attribute} of {subject} whose {key} is {key_value}?", steps)

    def _slips(self, task: Task, rng: random.Random) -> list[str]:
        """Other names from the corpus: the value of another land, or a land instead of a value."""
        others = rng.sample(self.corpus.facts, 4)
        return [name for fact in others for name in (fact.value, fact.subject) if name != task.answer]

    def pretrain_documents(self) -> list[str]:
        return self.corpus.documents()
