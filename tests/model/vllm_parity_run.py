"""Export a tiny random Ling-2.0 (fp32), serve it with vLLM in-process, print the largest |Δ logprob| as JSON.

Run by ``test_vllm_parity.py`` in a subprocess because vLLM sets process-wide state. Usage:
    python tests/model/vllm_parity_run.py CHECKPOINT_DIR
"""

import dataclasses
import json
import os
import sys

import torch

from configs.model import tiny_model
from model.export import export_hf
from model.ling2 import Ling2ForCausalLM

TOP_K = 5
PROMPTS = [
    [5, 17, 300, 2, 999, 41, 7, 7, 100],
    list(range(1, 30)),
    [1023, 0, 512, 511, 3, 3, 3, 3, 3, 3, 800],
]


def main(checkpoint: str) -> None:
    torch.manual_seed(0)
    # A wider init than training's makes logits and routing decisive, so a wrong detail shows up as a gap.
    model = Ling2ForCausalLM(dataclasses.replace(tiny_model(), initializer_range=0.08)).eval()
    with torch.no_grad():
        for layer in model.model.layers[1:]:
            layer.mlp.gate.expert_bias.normal_(0.0, 0.05)
    export_hf(model, checkpoint)

    # In-process engine, 1 GiB KV cache: the CPU settings of ARCHITECTURE.md §3 (read when vLLM is imported).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=checkpoint, dtype="float32", enforce_eager=True, distributed_executor_backend="uni",
        trust_remote_code=True, skip_tokenizer_init=True, max_model_len=64, seed=0,
    )  # fmt: skip
    params = SamplingParams(max_tokens=1, prompt_logprobs=TOP_K, detokenize=False)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in PROMPTS], params)

    max_diff, compared = 0.0, 0
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        with torch.no_grad():
            ours = torch.log_softmax(model(torch.tensor([prompt])).logits[0], dim=-1)
        for t in range(1, len(prompt)):
            for token, logprob in output.prompt_logprobs[t].items():
                max_diff = max(max_diff, abs(logprob.logprob - ours[t - 1, token].item()))
                compared += 1
    print(json.dumps({"max_abs_diff": max_diff, "compared": compared}))


if __name__ == "__main__":
    main(sys.argv[1])
