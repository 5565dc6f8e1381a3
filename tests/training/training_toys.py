"""Toys shared by the training tests and their subprocess workers: a tiny causal LM, tokens it can learn."""

from __future__ import annotations

import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 32


class ToyLM(nn.Module):
    """Embedding -> residual MLP (with dropout, so RNG state matters) -> norm -> head; ``frozen`` never trains."""

    def __init__(self, dim: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.mix = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.frozen = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, VOCAB)
        self.frozen.requires_grad_(False)

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        h_BTD = self.embed(ids_BT)
        h_BTD = h_BTD + self.drop(F.gelu(self.mix(h_BTD)))
        h_BTD = h_BTD + 0.1 * self.frozen(h_BTD)
        return self.head(self.norm(h_BTD))  # [B, T, V]


def toy_model(seed: int = 0, **kwargs) -> ToyLM:
    torch.manual_seed(seed)
    return ToyLM(**kwargs)


def markov_tokens(n: int, seed: int = 0) -> np.ndarray:
    """[n] uint16 tokens: mostly ``next = (3 * prev + 1) % VOCAB``, 20% uniform noise — learnable, not trivial."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.uint16)
    out[0] = 0
    noise = rng.random(n) < 0.2
    random_tokens = rng.integers(0, VOCAB, n)
    for i in range(1, n):
        out[i] = random_tokens[i] if noise[i] else (3 * int(out[i - 1]) + 1) % VOCAB
    return out


def lm_loss(model, batch_BT1: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    inputs_BT, targets_BT = batch_BT1[:, :-1], batch_BT1[:, 1:]
    logits_BTV = model(inputs_BT).float()
    loss = F.cross_entropy(logits_BTV.reshape(-1, VOCAB), targets_BT.reshape(-1))
    accuracy = (logits_BTV.argmax(-1) == targets_BT).float().mean()
    return loss, {"accuracy": accuracy, "logit_mean_V": logits_BTV.detach().mean(dim=(0, 1))}


def same(a, b) -> bool:
    """Equality that is exact for floats and tensors (bits), and strict about list vs tuple."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, torch.Tensor):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.contiguous().view(-1).view(torch.uint8).equal(b.contiguous().view(-1).view(torch.uint8))
        )
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b
