"""Weight sync into a running vLLM engine: the reload self-test, versions tagged on generations, a push of a
second tiny Ling-2.0's weights (then greedy generation should be the native engine's on that model), and a
push vLLM cannot load, which must leave it on the old version.
Prints JSON for ``test_rl_weight_sync_vllm.py`` (vLLM sets process-wide state, so this runs in a subprocess).

    python tests/rl/vllm_weight_sync_run.py WORK_DIR
"""

import dataclasses
import json
import sys
from pathlib import Path

import torch

from configs.model import tiny_model
from corpus.tokenizer import EOS, PAD, train_tokenizer
from inference.native import NativeEngine
from inference.sampling import SamplingParams
from inference.vllm_engine import VllmEngine
from inference.weight_sync import VersionedEngine, VllmBackend, WeightSync, WeightSyncError
from model import Ling2ForCausalLM, export_hf
from model.export import checkpoint_state_dict

CORPUS = ["[math] 12+7=?\n12+7=19\nAnswer: 19", "def f(x):\n    return x * 3 + 1\n"] * 50
PROMPTS = ["[math] 12+7=?\n", "def f(x):\n", "Answer"]


def tiny(seed: int) -> Ling2ForCausalLM:
    torch.manual_seed(seed)
    # A wider init than training's makes the greedy choice decisive, so ties cannot flip between engines.
    return Ling2ForCausalLM(dataclasses.replace(tiny_model(), initializer_range=0.08)).eval()


def main(work: str) -> None:
    tok = train_tokenizer(CORPUS, vocab_size=300)
    first, second = tiny(0), tiny(1)
    checkpoint = export_hf(first, Path(work) / "ckpt")
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    eos, pad = tok.token_to_id(EOS), tok.token_to_id(PAD)

    def native(model):
        return [g.token_ids for g in NativeEngine(model, tok, eos_id=eos, pad_id=pad).generate(PROMPTS, params)]

    vllm = VllmEngine(str(checkpoint), tok, eos_id=eos, max_model_len=64)
    engine = VersionedEngine(vllm)
    first_state, second_state = checkpoint_state_dict(first), checkpoint_state_dict(second)
    try:
        VllmBackend(vllm.llm, first_state, rpc_timeout_s=120)
        self_test = None
    except WeightSyncError as err:
        self_test = str(err)
    # The protocol itself is checked even where the self-test refuses the engine.
    backend = VllmBackend(vllm.llm, first_state, rpc_timeout_s=120, self_test=False)
    sync = WeightSync(engine, backend, timeout_s=180)
    sync.push(first_state, 0)
    version_before, before = engine.generate(PROMPTS, params)
    receipt = sync.push(second_state, 1)
    version_after, after = engine.generate(PROMPTS, params)
    broken = {**second_state, "lm_head.weight": second_state["lm_head.weight"][:, :-1].contiguous()}
    try:
        sync.push(broken, 2)
        failure = None
    except WeightSyncError as err:
        failure = str(err)
    version_failed, after_failure = engine.generate(PROMPTS, params)
    print(
        json.dumps(
            {
                "native_first": native(first),
                "native_second": native(second),
                "vllm_before": [version_before, [g.token_ids for g in before]],
                "vllm_after": [version_after, [g.token_ids for g in after]],
                "vllm_after_failure": [version_failed, [g.token_ids for g in after_failure]],
                "failure": failure,
                "self_test": self_test,
                "sync_seconds": receipt.seconds,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
