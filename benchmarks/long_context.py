"""Long-context decoding: the Ling-2.6 hybrid vs the same-size Ling-2.0 GQA base, side by side in one run.

Three measurements (issue: hybrid attention + migration, benchmarks):

1. Decode latency per token at each context length (default 1K, 4K, 16K): every model prefills the same
   random contexts, then every (model, context) pair decodes one token per round, in an order rotated each
   round, so the machine's drift hits all of them alike; medians per pair. Reference points in the same run: transformers' MiniMax hybrid (Lightning
   + softmax, same layer mix) and transformers' Llama (GQA), at the same dims.
2. Cache bytes per token, read from the live caches after decoding, against the analytic values
   (``model.cache_bytes_per_token`` for the hybrid, ``model.kv_cache_bytes_per_token`` for GQA).
3. Decode attention of one layer at each context, one new token: GQA (SDPA's ``enable_gqa`` and the grouped
   rows the base runs) vs MLA's absorbed step, the per-layer cost ratio that bounds the hybrid's speed-up.
4. Prefill time vs length of the attention cores alone: chunked Lightning (``kernels.lightning``, the torch
   path on CPU) vs causal softmax (SDPA), same B, H, K.

All models are randomly initialised (latency does not depend on the weights' values), fp32, batch ``--batch``.

    python -m benchmarks.long_context --help
    python -m benchmarks.long_context --contexts 1024 4096 16384 --steps 24
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

# The dims the reference numbers were measured at: hidden 256, 8 layers, 2 of them softmax.
HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, GROUP = 256, 8, 4, 2, 64, 4
EXPERTS, TOP_K, EXPERT_DIM, VOCAB = 16, 2, 128, 1024


def bench_config():
    from configs.model import ModelConfig

    return ModelConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=65536,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        n_group=4,
        topk_group=2,
        moe_intermediate_size=EXPERT_DIM,
        num_nextn_predict_layers=0,
        layer_group_size=GROUP,
        group_norm_size=4,
        q_lora_rank=192,
        kv_lora_rank=128,
        qk_rope_head_dim=32,
        qk_nope_head_dim=64,
        v_head_dim=64,
    )


def build_models(include_reference: bool) -> dict[str, torch.nn.Module]:
    from model import HybridForCausalLM, Ling2ForCausalLM

    cfg = bench_config()
    torch.manual_seed(0)
    models = {"ours: hybrid": HybridForCausalLM(cfg), "ours: GQA base": Ling2ForCausalLM(cfg)}
    if include_reference:
        from transformers import LlamaConfig, LlamaForCausalLM, MiniMaxConfig, MiniMaxForCausalLM

        shared = dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, max_position_embeddings=65536,
        )  # fmt: skip
        models["transformers: MiniMax hybrid"] = MiniMaxForCausalLM(
            MiniMaxConfig(
                **shared,
                intermediate_size=EXPERT_DIM,
                num_local_experts=EXPERTS,
                num_experts_per_tok=TOP_K,
                layer_types=list(cfg.layer_types),
                block_size=256,
            )
        )
        models["transformers: Llama (GQA)"] = LlamaForCausalLM(LlamaConfig(**shared, intermediate_size=2 * HIDDEN))
    return {name: model.eval() for name, model in models.items()}


def _is_ours(name: str) -> bool:
    return name.startswith("ours")


@torch.no_grad()
def _step(name: str, model, ids_BT, cache):
    """One forward with the cache; returns (next ids [B, 1], cache)."""
    if _is_ours(name):
        out = model(ids_BT, past_key_values=cache, use_cache=True)
    else:
        out = model(ids_BT, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1:].argmax(-1), out.past_key_values


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def decode_latency(models: dict, contexts: list[int], steps: int, batch: int) -> dict[int, dict[str, dict]]:
    """Prefill every context in every model, then ``steps`` rounds in which each (model, context) pair decodes
    one token, in an order rotated every round. Contexts are interleaved as well as models: the machine's
    speed drifts over minutes, and growth from 1K to 16K is a ratio across contexts."""
    pairs = [(context, name) for context in contexts for name in models]
    state, prefill_s = {}, {}
    for context in contexts:
        ids_BT = torch.randint(0, VOCAB, (batch, context), generator=torch.Generator().manual_seed(context))
        for name, model in models.items():
            prefill_s[context, name], state[context, name] = _timed(_step, name, model, ids_BT, None)
    times = {pair: [] for pair in pairs}
    for round_idx in range(steps):
        shift = round_idx % len(pairs)
        for context, name in pairs[shift:] + pairs[:shift]:
            elapsed, state[context, name] = _timed(_step, name, models[name], *state[context, name])
            times[context, name].append(elapsed)
    return {
        context: {
            name: {
                "decode_ms_per_token": 1e3 * statistics.median(times[context, name]),
                "prefill_s": prefill_s[context, name],
                "cache": state[context, name][1],
            }
            for name in models
        }
        for context in contexts
    }


def measured_cache_bytes(cache, batch: int) -> float:
    """Bytes per token of one sequence, read from one of our live caches."""
    return cache.live_bytes()["total"] / (batch * cache.get_seq_length())


@torch.no_grad()
def decode_attention_cores(contexts: list[int], batch: int, repeats: int) -> list[dict]:
    """Milliseconds per call of one layer's decode attention (one new token over S cached ones), at the
    models' dims: GQA through SDPA's ``enable_gqa`` (a pass per query head), GQA with the query heads folded
    into rows (``model.attention.grouped_rows_decode``, what the base runs), and MLA's absorbed step (H query
    rows over the [S, Rc + Kr] latent as key and value, what the hybrid runs). Calls are interleaved."""
    import torch.nn.functional as F

    from model.attention import grouped_rows_decode

    latent_dim = bench_config().kv_lora_rank + bench_config().qk_rope_head_dim
    rows = []
    for S in contexts:
        gen = torch.Generator().manual_seed(S)
        q = torch.randn(batch, HEADS, 1, HEAD_DIM, generator=gen)
        k, v = (torch.randn(batch, KV_HEADS, S, HEAD_DIM, generator=gen) for _ in range(2))
        q_latent = torch.randn(batch, 1, HEADS, latent_dim, generator=gen)
        latent = torch.randn(batch, 1, S, latent_dim, generator=gen)
        calls = {
            "gqa_enable_gqa": (F.scaled_dot_product_attention, (q, k, v), {"enable_gqa": True}),
            "gqa_rows": (grouped_rows_decode, (q, k, v, None), {}),
            "mla_absorbed": (F.scaled_dot_product_attention, (q_latent, latent, latent), {"scale": 0.1}),
        }
        times = {name: [] for name in calls}
        for _ in range(repeats):
            for name, (fn, args, kwargs) in calls.items():
                times[name].append(_timed(fn, *args, **kwargs)[0])
        rows.append({"context": S, **{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()}})
    return rows


@torch.no_grad()
def prefill_attention_cores(lengths: list[int], repeats: int) -> list[dict]:
    """Seconds per call of chunked Lightning vs causal softmax attention (B=1, H, K as the models)."""
    import torch.nn.functional as F

    from kernels.lightning import lightning_attn
    from kernels.lightning.decay import lightning_log_decay

    g_H = lightning_log_decay(HEADS, 0, LAYERS)
    rows = []
    for T in lengths:
        gen = torch.Generator().manual_seed(T)
        q, k, v = (torch.randn(1, T, HEADS, HEAD_DIM, generator=gen) for _ in range(3))
        q_s, k_s, v_s = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        calls = {
            "lightning": (lightning_attn, (q, k, v, g_H), {"scale": HEAD_DIM**-0.5, "mode": "chunk", "chunk_size": 64}),
            "softmax": (F.scaled_dot_product_attention, (q_s, k_s, v_s), {"is_causal": True}),
        }
        times = {name: [] for name in calls}
        for _ in range(repeats):
            for name, (fn, args, kwargs) in calls.items():
                times[name].append(_timed(fn, *args, **kwargs)[0])
        lightning_s, softmax_s = statistics.median(times["lightning"]), statistics.median(times["softmax"])
        rows.append({"length": T, "lightning_ms": 1e3 * lightning_s, "softmax_ms": 1e3 * softmax_s})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--steps", type=int, default=24, help="decode rounds per context (median taken)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' MiniMax and Llama")
    parser.add_argument("--core-repeats", type=int, default=20, help="calls per decode attention core (median)")
    parser.add_argument("--prefill-lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--prefill-repeats", type=int, default=3)
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args(argv)

    from model import cache_bytes_per_token, kv_cache_bytes_per_token

    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    models = build_models(include_reference=not args.no_reference)
    cfg = bench_config()
    # Thread pools, allocator arenas and lazy inits warm up on a short run first; it is not reported.
    decode_latency(models, [256], 4, args.batch)
    print(
        f"prefill {args.contexts} in {len(models)} models, then {args.steps} interleaved decode rounds ...", flush=True
    )
    results = decode_latency(models, args.contexts, args.steps, args.batch)
    decode, cache_rows = {}, []
    for context, by_model in results.items():
        seq_len = context + args.steps
        cache_rows.append(
            {
                "context": seq_len,
                "gqa_measured": measured_cache_bytes(by_model["ours: GQA base"]["cache"], args.batch),
                "gqa_analytic": kv_cache_bytes_per_token(cfg, torch.float32),
                "hybrid_measured": measured_cache_bytes(by_model["ours: hybrid"]["cache"], args.batch),
                "hybrid_analytic": cache_bytes_per_token(models["ours: hybrid"], seq_len)["total"],
            }
        )
        decode[context] = {name: {k: v for k, v in r.items() if k != "cache"} for name, r in by_model.items()}
    del results
    cores = decode_attention_cores(args.contexts, args.batch, args.core_repeats)
    prefill = prefill_attention_cores(args.prefill_lengths, args.prefill_repeats)
    report = {
        "batch": args.batch, "decode": decode, "cache_bytes_per_token": cache_rows, "decode_cores": cores,
        "prefill_cores": prefill,
    }  # fmt: skip
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


def format_report(report: dict) -> str:
    decode = report["decode"]
    contexts = list(decode)
    names = list(decode[contexts[0]])
    lines = [
        "",
        f"decode ms per token (batch {report['batch']}, median)",
        "| model | " + " | ".join(map(str, contexts)),
    ]
    lines.append("| " + " | ".join(["---"] * (len(contexts) + 1)) + " | growth |")
    for name in names:
        ms = [decode[c][name]["decode_ms_per_token"] for c in contexts]
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f}" for m in ms) + f" | {ms[-1] / ms[0]:.2f}x |")
    base, hybrid = "ours: GQA base", "ours: hybrid"
    speedup = [decode[c][base]["decode_ms_per_token"] / decode[c][hybrid]["decode_ms_per_token"] for c in contexts]
    lines.append("| hybrid speed-up vs GQA base | " + " | ".join(f"{s:.2f}x" for s in speedup) + " | |")
    if "transformers: MiniMax hybrid" in names:
        ref = [
            decode[c]["transformers: Llama (GQA)"]["decode_ms_per_token"]
            / decode[c]["transformers: MiniMax hybrid"]["decode_ms_per_token"]
            for c in contexts
        ]
        lines.append("| MiniMax speed-up vs Llama | " + " | ".join(f"{s:.2f}x" for s in ref) + " | |")
    lines += [
        "",
        "cache bytes per token (one sequence)",
        "| tokens | GQA live | GQA analytic | hybrid live | hybrid analytic | GQA / hybrid |",
    ]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for row in report["cache_bytes_per_token"]:
        lines.append(
            f"| {row['context']} | {row['gqa_measured']:.1f} | {row['gqa_analytic']} | {row['hybrid_measured']:.1f} | "
            f"{row['hybrid_analytic']:.1f} | {row['gqa_measured'] / row['hybrid_measured']:.2f}x |"
        )
    lines += [
        "",
        f"decode attention of one layer, one new token (batch {report['batch']}, ms, median)",
        "| context | GQA enable_gqa | GQA grouped rows (base) | MLA absorbed (hybrid) | MLA / GQA rows |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["decode_cores"]:
        lines.append(
            f"| {row['context']} | {row['gqa_enable_gqa_ms']:.3f} | {row['gqa_rows_ms']:.3f} | "
            f"{row['mla_absorbed_ms']:.3f} | {row['mla_absorbed_ms'] / row['gqa_rows_ms']:.2f} |"
        )
    lines += [
        "",
        "prefill, attention core only (B=1, fp32)",
        "| length | chunked Lightning ms | softmax SDPA ms | softmax / Lightning |",
    ]
    lines.append("| --- | --- | --- | --- |")
    for row in report["prefill_cores"]:
        lines.append(
            f"| {row['length']} | {row['lightning_ms']:.1f} | {row['softmax_ms']:.1f} | "
            f"{row['softmax_ms'] / row['lightning_ms']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
