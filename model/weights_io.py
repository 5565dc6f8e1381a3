"""Reading safetensors files into tensors that own their memory.

``safetensors.torch.load_file`` returns views into one buffer holding the whole file, and a tensor's data
starts wherever the file's header put it: 8-byte aligned, not the 64 bytes that PyTorch's CPU allocator
gives every tensor it creates. That changes numbers, not just speed: MKL's matrix-vector product (a linear
layer on one row, e.g. an expert that one token chose) sums in a different order when the matrix is not
32-byte aligned, so a reloaded model's logits differed from the trained model's by ~4e-7 on an AMD EPYC
(``tests/model/test_weights_io.py`` shows the kernel's sensitivity). Every checkpoint reader in the repo
goes through :func:`load_owned`, so a loaded tensor sits in memory like a trained one, and "reload is
bit-exact" stays true on every CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

# PyTorch's CPU allocator alignment (c10::gAlignment); what the numerics of a trained tensor assume.
ALLOCATOR_ALIGNMENT = 64


def load_owned(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file, each copied into memory of its own from the CPU allocator."""
    return {name: tensor.clone(memory_format=torch.contiguous_format) for name, tensor in load_file(str(path)).items()}


def is_allocator_aligned(tensor: torch.Tensor) -> bool:
    return tensor.data_ptr() % ALLOCATOR_ALIGNMENT == 0
