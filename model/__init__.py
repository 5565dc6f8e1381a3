"""Model architectures. Ling-2.0 (BailingMoeV2): ``Ling2ForCausalLM`` to train, ``export_hf`` / ``load_hf`` for
checkpoints in the official layout, ``update_expert_bias`` for aux-loss-free balancing (once per optimizer step).
Ling-2.5/2.6 hybrid (BailingMoeV2_5, Lightning + MLA): ``HybridForCausalLM`` with a ``HybridCache``,
``export_hybrid_hf`` / ``load_hybrid_hf``, ``cache_bytes_per_token``.
"""

from model.attention import KVCache, kv_cache_bytes_per_token
from model.export import checkpoint_state_dict, export_hf, load_hf
from model.export_hybrid import export_checkpoint, export_hybrid_hf, load_checkpoint, load_hybrid_hf
from model.hybrid import HybridForCausalLM, model_log_decays, set_decay_rule
from model.hybrid_cache import HybridCache, cache_bytes_per_token
from model.ling2 import Ling2ForCausalLM, Ling2Output, count_parameters
from model.moe import RouterStats, update_expert_bias

__all__ = [
    "HybridCache",
    "HybridForCausalLM",
    "KVCache",
    "Ling2ForCausalLM",
    "Ling2Output",
    "RouterStats",
    "cache_bytes_per_token",
    "checkpoint_state_dict",
    "count_parameters",
    "export_checkpoint",
    "export_hf",
    "export_hybrid_hf",
    "kv_cache_bytes_per_token",
    "load_checkpoint",
    "load_hf",
    "load_hybrid_hf",
    "model_log_decays",
    "set_decay_rule",
    "update_expert_bias",
]
