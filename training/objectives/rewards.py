"""Evo-CoT rewards for the G sampled responses of one prompt (METHODS §6.1, §6.3).

    R_acc       = 1 if the final answer is correct else 0
    R_format    = -format_penalty if a <think> marker appears or the response breaks the answer format
    p(l)        = 0.5 - (l - l_min) / (l_max - l_min + 1e-9)        l_min, l_max over the G responses
    R^_length   = p(l) if correct else min(p(l), 0)                  a wrong answer never gains by being short
    alpha       = clip(pass_rate, alpha_min, 1)                      easy prompt => strong length pressure
    R_redundant = -redundancy_coef * redundant segments / segments   (training.objectives.segments)
    R_compress  = -compression_coef * max(0, (tau - zlib_ratio) / tau)   degenerate repetition, optional
    R           = R_acc + R_format + alpha * R^_length + R_redundant + R_compress

The redundancy term replaces the report's LLM judge with the deterministic detector of
``segments.py``: exact on the environments' grammar (re-checks after the answer, repeated steps and
tool calls), and it never fires on a response without repeats or post-answer re-checks.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from configs.base import config
from environments.answers import THINK_MARKERS
from training.objectives.segments import redundancy_fraction


@config
class EvoCoTConfig:
    format_penalty: float = 0.5
    alpha_min: float = 0.1
    redundancy_coef: float = 0.2
    # 0 turns the zlib repetition penalty off; METHODS §6.3 uses it for the agentic specialist.
    compression_coef: float = 0.0
    compression_threshold: float = 0.35
    length_eps: float = 1e-9

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha_min <= 1.0:
            raise ValueError(f"alpha_min must be in (0, 1], got {self.alpha_min}")
        if min(self.format_penalty, self.redundancy_coef, self.compression_coef) < 0:
            raise ValueError("penalty coefficients must be >= 0")
        if self.compression_threshold <= 0 or self.length_eps <= 0:
            raise ValueError("compression_threshold and length_eps must be > 0")


@dataclass(frozen=True)
class ScoredResponse:
    """One verified response: ``length`` is its model-token count (what the length term prices)."""

    text: str
    correct: bool
    format_ok: bool
    length: int


def length_position(lengths_G: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """p(l) = 0.5 - (l - l_min) / (l_max - l_min + eps): 0.5 for the shortest, about -0.5 for the longest."""
    lengths_G = lengths_G.double()
    low, high = lengths_G.min(), lengths_G.max()
    return (0.5 - (lengths_G - low) / (high - low + eps)).float()


def length_reward(lengths_G: torch.Tensor, correct_G: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """R^_length: p(l) for correct responses, min(p(l), 0) for wrong ones."""
    position_G = length_position(lengths_G, eps)
    return torch.where(correct_G.bool(), position_G, position_G.clamp(max=0.0))


def compression_ratio(text: str) -> float:
    """zlib-compressed size / raw size of the UTF-8 text; low means highly repetitive."""
    raw = text.encode()
    return len(zlib.compress(raw)) / len(raw) if raw else 1.0


def evo_cot_rewards(group: Sequence[ScoredResponse], cfg: EvoCoTConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rewards [G] of one prompt's responses, and each term [G] before scaling plus group scalars."""
    if not group:
        raise ValueError("a group needs at least one response")
    if any(r.length < 0 for r in group):
        raise ValueError("response lengths must be >= 0")
    correct_G = torch.tensor([r.correct for r in group])
    lengths_G = torch.tensor([r.length for r in group], dtype=torch.float64)
    acc_G = correct_G.float()
    format_error_G = torch.tensor([not r.format_ok or any(m in r.text for m in THINK_MARKERS) for r in group])
    length_G = length_reward(lengths_G, correct_G, cfg.length_eps)
    pass_rate = acc_G.mean()
    alpha = pass_rate.clamp(cfg.alpha_min, 1.0)
    redundancy_G = torch.tensor([redundancy_fraction(r.text) for r in group])
    compression_G = torch.tensor([compression_ratio(r.text) for r in group])
    tau = cfg.compression_threshold
    repetition_G = ((tau - compression_G) / tau).clamp(min=0.0)

    rewards_G = (
        acc_G
        - cfg.format_penalty * format_error_G.float()
        + alpha * length_G
        - cfg.redundancy_coef * redundancy_G
        - cfg.compression_coef * repetition_G
    )
    stats = {
        "accuracy": acc_G,
        "format_error": format_error_G.float(),
        "length_reward": length_G,
        "redundancy": redundancy_G,
        "compression_ratio": compression_G,
        "pass_rate": pass_rate,
        "alpha": alpha,
    }
    return rewards_G, stats
