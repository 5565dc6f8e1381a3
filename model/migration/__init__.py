"""GQA -> Lightning + MLA architectural migration of a Ling-2.0 checkpoint (METHODS §3), as pure-ish steps:

    step 1   gqa_to_hybrid(base, config, kv_init=...)    Lightning conversion; softmax layers stay GQA
    step 2   freeze_for_linear_warmup(model)             then train (the stage's engine)
    step 3a  fuse_qk_norm(model, calibration)            QK-Norm folded into the softmax layers' W_qkv
    step 3b  freeze_for_partial_training(model)          then train
    step 3c  convert_to_mla(model, calibration)          TransMLA: GQA -> MLA (RoRoPE + BKV joint PCA)
    step 4   freeze_for_mla_warmup(model)                then train; unfreeze_all for continued pre-training

``convert`` runs 1 -> 3a -> 3c without training and reports the logits KL after each; ``logits_kl`` and
``heldout_loss`` are the measurements. The model between steps 1 and 3c is a ``HybridForCausalLM`` whose softmax
layers are ``InterimGQAAttention`` (``build_interim_hybrid`` rebuilds that structure for a checkpoint).
"""

from .calibration import AttentionInputs, collect_attention_inputs
from .expand import KV_INITS, expand_qkv, gqa_to_hybrid
from .freeze import freeze_for_linear_warmup, freeze_for_mla_warmup, freeze_for_partial_training, unfreeze_all
from .interim import InterimGQAAttention, build_interim_hybrid, interim_layers, softmax_layer_indices
from .metrics import heldout_loss, logits_kl
from .pipeline import STEPS, convert
from .qk_norm_fusion import QKNormFusion, QKNormStats, fuse_qk_norm, fused_qkv_weight, qk_rms_statistics
from .transmla import MLALayerStats, convert_to_mla, mla_from_gqa, transmla_state_dict

__all__ = [
    "KV_INITS",
    "STEPS",
    "AttentionInputs",
    "InterimGQAAttention",
    "MLALayerStats",
    "QKNormFusion",
    "QKNormStats",
    "build_interim_hybrid",
    "collect_attention_inputs",
    "convert",
    "convert_to_mla",
    "expand_qkv",
    "freeze_for_linear_warmup",
    "freeze_for_mla_warmup",
    "freeze_for_partial_training",
    "fuse_qk_norm",
    "fused_qkv_weight",
    "gqa_to_hybrid",
    "heldout_loss",
    "interim_layers",
    "logits_kl",
    "mla_from_gqa",
    "qk_rms_statistics",
    "softmax_layer_indices",
    "transmla_state_dict",
    "unfreeze_all",
]
