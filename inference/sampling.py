"""What every generation engine takes and returns, independent of the engine.

Shape legend: B batch rows, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """temperature 0 is greedy. ``seed`` seeds row i with ``seed + i``, so a row's sample does not depend
    on which other rows share its batch."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling params {self}")


@dataclass
class Generation:
    """One completed row. ``logprobs[i]`` is log π(token_ids[i]) under the model's (temperature-1)
    distribution — what RL objectives need whatever temperature sampled the token."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "eos" | "stop" | "length"
    stop_string: str | None = None


def sample_next(logits_BV: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]) -> torch.Tensor:
    """Next token per row [B] from fp32 logits: greedy, or temperature + nucleus sampling."""
    if params.temperature == 0:
        return logits_BV.argmax(-1)
    probs_BV = torch.softmax(logits_BV / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs_BV.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        drop = sorted_p.cumsum(-1) - sorted_p >= params.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs_BV = torch.zeros_like(probs_BV).scatter(-1, order, sorted_p)
    return torch.stack([torch.multinomial(probs_BV[i], 1, generator=g)[0] for i, g in enumerate(generators)])
