"""What a rollout is while it is generated, waits for tools, is verified and trained on, and on disk.

A ``RolloutRecord`` is one sampled response to one prompt. Its tokens carry the policy version that
produced them (``versions``), so a response generated across a step boundary is a sequence of segments,
one per version; observation tokens (tool results, mask 0, log-prob 0) carry the version of the model
token before them, so versions never decrease along a row. A ``RolloutGroup`` is the G samples of one
prompt: the unit the scheduler admits and the trainer consumes (group-normalised advantages need all G).

Records round-trip through plain JSON (``to_json`` / ``from_json``): ints, floats (Python's repr, exact),
strings and lists; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Stage = Literal["generate", "observe", "verify", "done"]


@dataclass
class RolloutRecord:
    prompt_index: int
    sample: int
    task_id: str
    family: str
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)  # 1 = model token, 0 = environment observation
    logprobs: list[float] = field(default_factory=list)  # behaviour log-probs (rollout engine), 0 on observations
    versions: list[int] = field(default_factory=list)
    text: str = ""
    # The current model turn starts here (after the last observation): stop strings are searched in its text.
    turn_start: int = 0
    turn_text_start: int = 0
    tool_calls: int = 0
    chunks: int = 0
    stage: Stage = "generate"
    finish_reason: str = ""
    verdict: dict[str, Any] | None = None  # the verifier's ``Verdict`` fields
    reward: float | None = None

    @property
    def rollout_id(self) -> str:
        return f"{self.prompt_index}/{self.sample}"

    @property
    def correct(self) -> bool:
        return bool(self.verdict and self.verdict["correct"])

    @property
    def model_tokens(self) -> int:
        return sum(self.response_mask)

    @property
    def segments(self) -> list[tuple[int, int, int]]:
        """``(version, start, end)`` runs of equal version over the response tokens."""
        runs: list[tuple[int, int, int]] = []
        for i, version in enumerate(self.versions):
            if runs and runs[-1][0] == version:
                runs[-1] = (version, runs[-1][1], i + 1)
            else:
                runs.append((version, i, i + 1))
        return runs

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutRecord:
        return cls(**data)


@dataclass
class RolloutGroup:
    prompt_index: int
    task: Any
    records: list[RolloutRecord]
    admitted_version: int

    @property
    def done(self) -> bool:
        return all(r.stage == "done" for r in self.records)

    @property
    def oldest_version(self) -> int:
        return min((v for r in self.records for v in r.versions), default=self.admitted_version)

    @property
    def newest_version(self) -> int:
        return max((v for r in self.records for v in r.versions), default=self.admitted_version)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_index": self.prompt_index,
            "task": dataclasses.asdict(self.task),
            "records": [r.to_json() for r in self.records],
            "admitted_version": self.admitted_version,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], task_type: type) -> RolloutGroup:
        return cls(
            prompt_index=data["prompt_index"],
            task=task_type(**data["task"]),
            records=[RolloutRecord.from_json(r) for r in data["records"]],
            admitted_version=data["admitted_version"],
        )
