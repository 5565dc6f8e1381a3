"""Greedy generation from one exported tiny Ling-2.0 with both engines; prints JSON for the test.

Run in a subprocess by ``test_vllm_engine.py`` (vLLM sets process-wide state). Usage:
    python tests/inference/vllm_generate_run.py WORK_DIR
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
from model import Ling2ForCausalLM, export_hf

CORPUS = ["[math] 12+7=?\n12+7=19\nAnswer: 19", "def f(x):\n    return x * 3 + 1\n"] * 50
PROMPTS = ["[math] 12+7=?\n", "def f(x):\n", "Answer"]


def main(work: str) -> None:
    torch.manual_seed(0)
    tok = train_tokenizer(CORPUS, vocab_size=300)
    # A wider init than training's makes the greedy choice decisive, so ties cannot flip between engines.
    model = Ling2ForCausalLM(dataclasses.replace(tiny_model(), initializer_range=0.08)).eval()
    checkpoint = export_hf(model, Path(work) / "ckpt")
    params = SamplingParams(temperature=0.0, max_new_tokens=12, stop=("\n",))
    native = NativeEngine(model, tok, eos_id=tok.token_to_id(EOS), pad_id=tok.token_to_id(PAD)).generate(
        PROMPTS, params
    )
    vllm = VllmEngine(str(checkpoint), tok, eos_id=tok.token_to_id(EOS), max_model_len=64).generate(PROMPTS, params)
    print(
        json.dumps(
            {
                "native": [[g.token_ids, g.logprobs, g.text, g.finish_reason] for g in native],
                "vllm": [[g.token_ids, g.logprobs, g.text, g.finish_reason] for g in vllm],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
