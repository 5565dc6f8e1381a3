"""Step 1 of the migration (METHODS §3.1): Lightning conversion of a Ling-2.0 GQA model into the hybrid.

    every weight the two architectures share      copied bit for bit (embeddings, norms, dense MLP, MoE experts,
                                                  router weight and expert_bias, lm_head, MTP fusion + FFN)
    layers that become Lightning ("linear_attention" in config.layer_types):
        query_key_value  [(H + 2G)·K, D] -> [3·H·K, D]: the GQA heads "augmented along the head dimension"
                         q rows as they are; the G key/value heads fill H head slots by ``kv_init``:
                           "replicate":      slot h <- kv head h // (H/G), every head of the group
                                             (the q-k pairing of the GQA layer survives: function-closer)
                           "first_of_group": slot g·(H/G) <- kv head g; other slots ~ N(0, init_std)
        query_layernorm, key_layernorm, dense    copied (QK-Norm and partial RoPE kept)
        g_proj ~ N(0, init_std),  g_norm γ = 1    (new)
    layers that become MLA (the "full_attention" layers and the MTP layers): the base's GQA attention is kept
        as is, inside the hybrid (``interim.InterimGQAAttention``): steps 2 and 3b train that intermediate
        model, step 3a fuses its QK-Norm and step 3c turns it into MLA (``transmla.convert_to_mla``).

init_std is ``config.initializer_range``. New values come from a generator seeded with ``seed``, so a conversion
is reproducible and leaves the global RNG alone. Shape legend: see ``model/layers.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from model.hybrid import HybridForCausalLM
from model.lightning_attention import LightningAttention

from .interim import build_interim_hybrid

KVInit = Literal["replicate", "first_of_group"]
KV_INITS = ("replicate", "first_of_group")

# Config keys that must agree between the base and the hybrid for the shared weights to carry over.
SHARED_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "partial_rotary_factor", "rope_theta", "use_qk_norm", "num_experts",
    "num_shared_experts", "moe_intermediate_size", "first_k_dense_replace", "num_nextn_predict_layers",
    "tie_word_embeddings",
)  # fmt: skip


def expand_kv_heads(
    kv_GK: torch.Tensor, num_heads: int, kv_init: KVInit, init_std: float, generator: torch.Generator
) -> torch.Tensor:
    """[G, K, *rest] key or value rows of G heads -> [H, K, *rest] rows of H heads, by ``kv_init``.

    Random rows (``first_of_group``) are N(0, init_std) for weights; a bias (no trailing dims) gets zeros.
    """
    G = kv_GK.shape[0]
    if kv_init not in KV_INITS:
        raise ValueError(f"kv_init must be one of {KV_INITS}, got {kv_init!r}")
    if num_heads % G:
        raise ValueError(f"{num_heads} heads cannot be grouped over {G} key/value heads")
    group = num_heads // G
    if kv_init == "replicate":
        return kv_GK.repeat_interleave(group, dim=0)
    shape = (num_heads, *kv_GK.shape[1:])
    if kv_GK.dim() > 2:
        fresh = torch.randn(shape, generator=generator, dtype=torch.float32) * init_std
    else:
        fresh = torch.zeros(shape)
    out = fresh.to(device=kv_GK.device, dtype=kv_GK.dtype)
    out[::group] = kv_GK
    return out


def expand_qkv(
    qkv: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    kv_init: KVInit,
    init_std: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """GQA ``query_key_value`` rows [(H + 2G)·K, *rest] -> Lightning rows [3·H·K, *rest] (weight or bias)."""
    H, G, K = num_heads, num_kv_heads, head_dim
    rest = qkv.shape[1:]
    if qkv.shape[0] != (H + 2 * G) * K:
        raise ValueError(f"query_key_value has {qkv.shape[0]} rows, expected (H + 2G)·K = {(H + 2 * G) * K}")
    q, k, v = qkv.split([H * K, G * K, G * K])
    k_HK = expand_kv_heads(k.reshape(G, K, *rest), H, kv_init, init_std, generator)
    v_HK = expand_kv_heads(v.reshape(G, K, *rest), H, kv_init, init_std, generator)
    return torch.cat((q, k_HK.reshape(H * K, *rest), v_HK.reshape(H * K, *rest)))


def _check_configs(base_config, config) -> None:
    diffs = {
        key: (getattr(base_config, key), getattr(config, key))
        for key in SHARED_KEYS
        if getattr(base_config, key) != getattr(config, key)
    }
    if diffs:
        raise ValueError(f"base and hybrid configs disagree on shared keys (base, hybrid): {diffs}")


@torch.no_grad()
def gqa_to_hybrid(base_model: nn.Module, config, *, kv_init: KVInit = "replicate", seed: int = 0) -> HybridForCausalLM:
    """Step 1: the intermediate hybrid (Lightning layers converted, softmax layers still GQA) built from
    ``base_model`` (a ``Ling2ForCausalLM``) and the hybrid ``config``. The base is not modified."""
    if kv_init not in KV_INITS:
        raise ValueError(f"kv_init must be one of {KV_INITS}, got {kv_init!r}")
    _check_configs(base_model.config, config)
    reference = next(base_model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hybrid = build_interim_hybrid(config)
    hybrid.to(device=reference.device, dtype=reference.dtype)
    generator = torch.Generator().manual_seed(seed)
    std = config.initializer_range

    lightning_prefixes = tuple(
        f"model.layers.{i}.attention."
        for i, layer in enumerate(hybrid.model.layers)
        if isinstance(layer.attention, LightningAttention)
    )
    base_state = base_model.state_dict()
    new_state, used = {}, set()
    for name, target in hybrid.state_dict().items():
        prefix = next((p for p in lightning_prefixes if name.startswith(p)), None)
        local = name[len(prefix) :] if prefix else None
        if local == "g_proj.weight":
            new_state[name] = (torch.randn(target.shape, generator=generator) * std).to(target)
            continue
        if local == "g_norm.weight":
            new_state[name] = torch.ones_like(target)
            continue
        if name not in base_state:
            raise KeyError(f"hybrid weight {name} has no counterpart in the base model")
        source = base_state[name]
        used.add(name)
        if local in ("query_key_value.weight", "query_key_value.bias"):
            source = expand_qkv(
                source, config.num_attention_heads, config.num_key_value_heads, config.head_dim, kv_init, std, generator
            )
        if source.shape != target.shape:
            raise ValueError(f"{name}: base shape {tuple(source.shape)} != hybrid shape {tuple(target.shape)}")
        new_state[name] = source.clone()
    unused = sorted(set(base_state) - used)
    if unused:
        raise KeyError(f"base weights with no place in the hybrid: {unused}")
    hybrid.load_state_dict(new_state, strict=True)
    return hybrid.train(base_model.training)
