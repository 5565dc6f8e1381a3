"""Model architectures. Ling-2.0 (BailingMoeV2): ``Ling2ForCausalLM`` to train, ``export_hf`` / ``load_hf`` for
checkpoints in the official layout, ``update_expert_bias`` for aux-loss-free balancing (once per optimizer step).
"""

from model.attention import KVCache
from model.export import checkpoint_state_dict, export_hf, load_hf
from model.ling2 import Ling2ForCausalLM, Ling2Output, count_parameters
from model.moe import RouterStats, update_expert_bias

__all__ = [
    "KVCache",
    "Ling2ForCausalLM",
    "Ling2Output",
    "RouterStats",
    "checkpoint_state_dict",
    "count_parameters",
    "export_hf",
    "load_hf",
    "update_expert_bias",
]
