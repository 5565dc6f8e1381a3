"""Which parameters train in each warmup of the migration (METHODS §3.1); everything else gets
``requires_grad = False``. Each function returns the sorted names of the trainable parameters, for the run log.

    step 2  Linear Warmup       Lightning layers' query_key_value + QK-Norm γ only (the literal text: the new
                                g_proj / g_norm stay frozen at their init)
    step 3b partial training    Lightning layers' query_key_value, QK-Norm γ, g_proj, g_norm, and the
                                query_key_value of the softmax layers still GQA (whose QK-Norm step 3a just
                                fused into it: this is what recovers the fusion loss)
    step 4  MLA Warmup          the MLA parameters TransMLA built: q_a_proj / q_a_layernorm / q_b_proj (or
                                q_proj), kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj; the MLA ``dense`` is the
                                GQA output projection copied unchanged, so it stays frozen
    then    unfreeze_all        continued pre-training

A frozen parameter has no gradient, so torch optimizers (AdamW included, weight decay too) leave it untouched
even when it sits in their parameter groups.
"""

from __future__ import annotations

from torch import nn

from model.lightning_attention import LightningAttention
from model.mla import MultiLatentAttention

from .interim import InterimGQAAttention

LINEAR_WARMUP = ("query_key_value", "query_layernorm", "key_layernorm")
PARTIAL_TRAINING = (*LINEAR_WARMUP, "g_proj", "g_norm")
GQA_PARTIAL_TRAINING = ("query_key_value", "query_layernorm", "key_layernorm")
MLA_CONVERTED = ("q_proj", "q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj")


def _train_only(model: nn.Module, trainable: dict[type, tuple[str, ...]]) -> list[str]:
    """requires_grad = True exactly for the parameters of children named in ``trainable[type(attention)]``."""
    model.requires_grad_(False)
    names = []
    for module_name, module in model.named_modules():
        children = trainable.get(type(module), ())
        for child_name in children:
            child = getattr(module, child_name, None)
            if child is None:
                continue
            for param_name, param in child.named_parameters():
                param.requires_grad_(True)
                names.append(f"{module_name}.{child_name}.{param_name}")
    if not names:
        raise ValueError(f"the model has no parameter to train in this step (looked for {trainable})")
    return sorted(names)


def freeze_for_linear_warmup(model: nn.Module) -> list[str]:
    """Step 2: only the Lightning layers' ``query_key_value`` and QK-Norm weights train."""
    return _train_only(model, {LightningAttention: LINEAR_WARMUP})


def freeze_for_partial_training(model: nn.Module) -> list[str]:
    """Step 3b: Lightning W_qkv, QK-Norm, g_proj, g_norm, and the W_qkv (and any QK-Norm left) of the GQA
    softmax layers."""
    return _train_only(model, {LightningAttention: PARTIAL_TRAINING, InterimGQAAttention: GQA_PARTIAL_TRAINING})


def freeze_for_mla_warmup(model: nn.Module) -> list[str]:
    """Step 4: only the parameters the MLA conversion created."""
    return _train_only(model, {MultiLatentAttention: MLA_CONVERTED})


def unfreeze_all(model: nn.Module) -> list[str]:
    model.requires_grad_(True)
    return sorted(name for name, _ in model.named_parameters())
