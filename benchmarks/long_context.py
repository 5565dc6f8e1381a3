"""Long-context decoding: the Ling-2.6 hybrid vs the same-size Ling-2.0 GQA base, side by side in one run.

Measurements (issue 14, "Decode, restated"):

1. Decode latency per token at each context length (default 1K, 4K, 16K, 32K), for each layer mix
   (``--layers`` / ``--layer-group-size``, paired; default the paper's one MLA layer per eight at 16 layers,
   then the earlier group-4 mix at 8 layers for continuity) and each batch size (default 1 and 8). Our models
   decode two ways on the same cache: the eager forward and ``inference.compiled_decode.DecodeStep`` (the
   per-token fixed cost compiled). Reference rows in the same run, at the same dims: transformers' MiniMax
   hybrid (Lightning + softmax at the same layer types; its softmax layers are GQA with 2 KV heads, not MLA;
   softmax top-2 routing over 16 experts without groups or a shared expert; no QK-norm) and transformers' Llama
   (GQA, dense SwiGLU of width 2·hidden instead of MoE), both eager, up to ``--reference-max-context``.
   Caches are filled with random values to the context length (a short real prefill makes their structure;
   latency does not depend on the values), so a 32K batch-8 context costs no quadratic prefill. Then every
   (model, context) pair decodes one greedy token per round, in an order rotated each round, so the
   machine's drift hits all of them alike; medians per pair.
2. The fixed cost F per step: the same decode at ``--fixed-context`` (64) cached tokens, where attention is
   negligible, eager and compiled.
3. Cache bytes per token, read from the live caches, against the analytic values
   (``model.cache_bytes_per_token`` for the hybrid, ``model.kv_cache_bytes_per_token`` for GQA).
4. Decode attention of one layer at each context, one new token: GQA (SDPA's ``enable_gqa`` and the grouped
   rows the base runs) vs MLA's absorbed step, the per-layer cost ratio that bounds the hybrid's speed-up.
5. Prefill time vs length of the attention cores alone: chunked Lightning (``kernels.lightning``, the torch
   path on CPU) vs causal softmax (SDPA), same B, H, K.

All models are randomly initialised, fp32. The goals of issue 14 are checked on each mix and pair of rows
(eager vs eager, compiled vs compiled): batch 8, hybrid >= 4x the base at 16K and >= 5x at 32K; batch 1,
>= 2x the base at 16K and latency growth 1K -> 16K <= 1.3x.

    python -m benchmarks.long_context --help
    python -m benchmarks.long_context            # the full measurement, both mixes, batch 1 and 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

# Dims of every row: hidden 256, 4 heads x 64 (2 KV heads for GQA), MLA ranks q 192 / kv 128 / rope 32.
HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 256, 4, 2, 64
EXPERTS, TOP_K, EXPERT_DIM, VOCAB = 16, 2, 128, 1024
# The paper's mix first (one MLA layer per eight, 16 layers), then the earlier group-4 mix at 8 layers.
MIXES = ((16, 8), (8, 4))
PREFILL_TOKENS = 8  # the real prefill that lays out each cache before it is filled to the context
GOALS = {1: {"speedup": {16384: 2.0}, "growth": (1024, 16384, 1.3)}, 8: {"speedup": {16384: 4.0, 32768: 5.0}}}
HYBRID, BASE = "ours: hybrid", "ours: GQA base"
COMPILED = ", compiled"


def bench_config(layers: int = MIXES[0][0], layer_group_size: int = MIXES[0][1]):
    from configs.model import ModelConfig

    return ModelConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=layers,
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
        layer_group_size=layer_group_size,
        group_norm_size=4,
        q_lora_rank=192,
        kv_lora_rank=128,
        qk_rope_head_dim=32,
        qk_nope_head_dim=64,
        v_head_dim=64,
    )


def build_models(cfg, include_reference: bool) -> dict[str, torch.nn.Module]:
    from model import HybridForCausalLM, Ling2ForCausalLM

    torch.manual_seed(0)
    models = {HYBRID: HybridForCausalLM(cfg), BASE: Ling2ForCausalLM(cfg)}
    if include_reference:
        from transformers import LlamaConfig, LlamaForCausalLM, MiniMaxConfig, MiniMaxForCausalLM

        shared = dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, max_position_embeddings=65536,
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


def _compiled_step(decode, ids_B1, cache):
    return decode.step(ids_B1, cache).argmax(-1), cache


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def _random_like_grown(t: torch.Tensor, dim: int, length: int, gen: torch.Generator) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = length
    return torch.randn(shape, generator=gen, dtype=t.dtype).to(t.device)


def fill_cache(cache, context: int, spare: int, seed: int):
    """Grow every per-token tensor of a prefilled cache to ``context`` tokens of random values (states and
    other fixed-size tensors keep their prefill values). Our buffers get ``spare`` tokens of capacity beyond
    it, so the timed steps append without reallocating; transformers' caches grow by ``torch.cat`` as always.
    Returns the cache."""
    from model import HybridCache, KVCache
    from model.append_buffer import AppendBuffer

    gen = torch.Generator().manual_seed(seed)

    def grown_buffer(buffer: AppendBuffer) -> None:
        buffer._storage = _random_like_grown(buffer._storage, buffer.dim, context + spare, gen)
        buffer.length = context

    if isinstance(cache, HybridCache):
        for buffer in cache.latents.values():
            grown_buffer(buffer)
        cache.seen_tokens = context
    elif isinstance(cache, KVCache):
        for buffer in (*cache.keys, *cache.values):
            grown_buffer(buffer)
    else:  # transformers: DynamicCache (Llama) or MiniMaxCache (its softmax layers; Lightning states stay)
        for layer in cache.layers:
            if getattr(layer, "is_initialized", False) and layer.keys.numel():
                layer.keys = _random_like_grown(layer.keys, -2, context, gen)
                layer.values = _random_like_grown(layer.values, -2, context, gen)
    return cache


def decode_latency(
    models: dict, contexts: list[int], steps: int, batch: int, compiled: dict | None = None, reference_max: int = 0
) -> dict[int, dict[str, dict]]:
    """Lay out a cache per (model, context) with a short prefill, fill it to the context, then ``steps``
    rounds in which each (row, context) pair decodes one token, in an order rotated every round. A compiled
    row (``compiled[name]``, a ``DecodeStep`` of ``models[name]``) decodes on the same cache as its eager row,
    so it sees the context grow by two tokens per round instead of one. Contexts are interleaved as well as
    models: the machine's speed drifts over minutes, and growth from 1K to 16K is a ratio across contexts.
    Reference rows (not ours) run up to ``reference_max`` tokens of context (0: all)."""
    compiled = compiled or {}
    runners = {}  # row -> (model name whose cache it uses, step function)
    for name, model in models.items():
        runners[name] = (name, lambda ids, cache, name=name, model=model: _step(name, model, ids, cache))
        if name in compiled:
            runners[name + COMPILED] = (name, lambda ids, cache, d=compiled[name]: _compiled_step(d, ids, cache))
    spare = 2 * steps + 2

    def runs(context: int, row: str) -> bool:
        return _is_ours(row) or not reference_max or context <= reference_max

    pairs = [(context, row) for context in contexts for row in runners if runs(context, row)]
    state = {}
    for context in contexts:
        ids_BT = torch.randint(0, VOCAB, (batch, PREFILL_TOKENS), generator=torch.Generator().manual_seed(context))
        for name, model in models.items():
            if runs(context, name):
                next_B1, cache = _step(name, model, ids_BT, None)
                state[context, name] = (next_B1, fill_cache(cache, context, spare, seed=context))
    times = {pair: [] for pair in pairs}
    for round_idx in range(steps):
        shift = round_idx % len(pairs)
        for context, row in pairs[shift:] + pairs[:shift]:
            name, fn = runners[row]
            elapsed, state[context, name] = _timed(fn, *state[context, name])
            times[context, row].append(elapsed)
    return {
        context: {
            row: {"decode_ms_per_token": 1e3 * statistics.median(times[context, row]), "cache": state[context, name][1]}
            for row, (name, _) in runners.items()
            if runs(context, row)
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

    g_H = lightning_log_decay(HEADS, 0, MIXES[0][0])
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


@torch.no_grad()
def fixed_cost_cpu(cfg, batch: int, steps: int) -> dict[str, float]:
    """F per decode step at ``PREFILL_TOKENS`` + 56 = 64 cached tokens, as CPU time of the decoding thread
    (ms, median of ``steps`` interleaved steps after 3 warm ones), eager and compiled, for our two models.
    CPU time on one thread instead of wall time: it barely moves when other jobs share the cores, which wall
    time does by several times. Run with ``torch.set_num_threads(1)`` (``--fixed-cost-only`` does)."""
    from inference.compiled_decode import DecodeStep
    from model import HybridForCausalLM, Ling2ForCausalLM

    out = {}
    for name, model_class in ((HYBRID, HybridForCausalLM), (BASE, Ling2ForCausalLM)):
        torch.manual_seed(0)
        model = model_class(cfg).eval()
        decode = DecodeStep(model, dynamic=False)
        ids_BT = torch.randint(0, VOCAB, (batch, PREFILL_TOKENS), generator=torch.Generator().manual_seed(0))
        next_B1, cache = _step(name, model, ids_BT, None)
        fill_cache(cache, 64, 2 * steps + 8, seed=0)
        rows = {
            name: lambda ids, c, name=name, model=model: _step(name, model, ids, c),
            name + COMPILED: lambda ids, c, decode=decode: _compiled_step(decode, ids, c),
        }
        times = {row: [] for row in rows}
        for _ in range(steps + 3):
            for row, fn in rows.items():
                start = time.thread_time()
                next_B1, cache = fn(next_B1, cache)
                times[row].append(time.thread_time() - start)
        out.update({row: 1e3 * statistics.median(t[3:]) for row, t in times.items()})
    return out


def check_goals(decode: dict, batch: int) -> list[dict]:
    """Issue 14's goals at ``batch`` for the eager pair and the compiled pair of our rows (those whose
    contexts were measured): the hybrid's speed-up over the base, and at batch 1 the hybrid's growth."""
    rows = []
    for mode in ("", COMPILED):
        hybrid, base = HYBRID + mode, BASE + mode
        if hybrid not in decode[next(iter(decode))]:
            continue
        for context, target in GOALS.get(batch, {}).get("speedup", {}).items():
            if context in decode:
                value = decode[context][base]["decode_ms_per_token"] / decode[context][hybrid]["decode_ms_per_token"]
                rows.append(
                    {"goal": f"{hybrid} >= {target}x {base} at {context}", "value": value, "holds": value >= target}
                )
        if "growth" in GOALS.get(batch, {}):
            short, long, limit = GOALS[batch]["growth"]
            if short in decode and long in decode:
                value = decode[long][hybrid]["decode_ms_per_token"] / decode[short][hybrid]["decode_ms_per_token"]
                rows.append(
                    {"goal": f"{hybrid} growth {short} -> {long} <= {limit}x", "value": value, "holds": value <= limit}
                )
    return rows


def measure_mix(layers: int, group: int, args) -> dict:
    """Every batch size of one layer mix: decode latency (eager and compiled), F, cache bytes, goals."""
    from inference.compiled_decode import DecodeStep
    from model import cache_bytes_per_token, kv_cache_bytes_per_token

    cfg = bench_config(layers, group)
    models = build_models(cfg, include_reference=not args.no_reference)
    compiled = {} if args.no_compile else {name: DecodeStep(models[name], dynamic=False) for name in (HYBRID, BASE)}
    runs, cache_rows = {}, []
    for batch in args.batch:
        # Thread pools, allocator arenas, lazy inits and the compiled pieces (for this batch size) warm up first.
        decode_latency(models, [256], 3, batch, compiled)
        print(
            f"mix {layers} layers / group {group}, batch {batch}: {args.steps} interleaved decode rounds ...",
            flush=True,
        )
        contexts = [args.fixed_context, *args.contexts]
        results = decode_latency(models, contexts, args.steps, batch, compiled, args.reference_max_context)
        if not cache_rows:
            for context in args.contexts:
                base_cache, hybrid_cache = results[context][BASE]["cache"], results[context][HYBRID]["cache"]
                seq_len = hybrid_cache.get_seq_length()
                cache_rows.append(
                    {
                        "context": seq_len,
                        "gqa_measured": measured_cache_bytes(base_cache, batch),
                        "gqa_analytic": kv_cache_bytes_per_token(cfg, torch.float32),
                        "hybrid_measured": measured_cache_bytes(hybrid_cache, batch),
                        "hybrid_analytic": cache_bytes_per_token(models[HYBRID], seq_len)["total"],
                    }
                )
        fixed = {row: r["decode_ms_per_token"] for row, r in results.pop(args.fixed_context).items()}
        decode = {
            c: {row: {"decode_ms_per_token": r["decode_ms_per_token"]} for row, r in by.items()}
            for c, by in results.items()
        }
        del results
        runs[batch] = {"decode": decode, "fixed_ms": fixed, "goals": check_goals(decode, batch)}
    return {"layers": layers, "layer_group_size": group, "layer_types": list(cfg.layer_types), "runs": runs,
            "cache_bytes_per_token": cache_rows}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[m[0] for m in MIXES], help="depth of each mix")
    parser.add_argument(
        "--layer-group-size", type=int, nargs="+", default=[m[1] for m in MIXES],
        help="layer_group_size of each mix (one MLA layer per group), paired with --layers",
    )  # fmt: skip
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    parser.add_argument("--fixed-context", type=int, default=64, help="context at which F (fixed cost) is read")
    parser.add_argument("--steps", type=int, default=16, help="decode rounds per context (median taken)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' MiniMax and Llama")
    parser.add_argument("--reference-max-context", type=int, default=16384, help="longest context of those rows")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled decode rows")
    parser.add_argument("--core-repeats", type=int, default=20, help="calls per decode attention core (median)")
    parser.add_argument("--prefill-lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--prefill-repeats", type=int, default=3)
    parser.add_argument(
        "--fixed-cost-only", action="store_true",
        help="only F at 64 cached tokens, as one thread's CPU time (robust to a loaded machine), eager and compiled",
    )  # fmt: skip
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args(argv)
    if len(args.layers) != len(args.layer_group_size):
        parser.error("--layers and --layer-group-size pair up: give as many of each")

    if args.fixed_cost_only:
        torch.set_num_threads(1)
        lines = ["| layers | layer_group_size | batch | row | F, CPU ms per step |", "| --- | --- | --- | --- | --- |"]
        report = {"fixed_cost_cpu": []}
        for layers, group in zip(args.layers, args.layer_group_size, strict=True):
            for batch in args.batch:
                for row, ms in fixed_cost_cpu(bench_config(layers, group), batch, args.steps).items():
                    report["fixed_cost_cpu"].append(
                        {"layers": layers, "layer_group_size": group, "batch": batch, "row": row, "ms": ms}
                    )
                    lines.append(f"| {layers} | {group} | {batch} | {row} | {ms:.2f} |")
        print("\n".join(lines))
        return report
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    mixes = [measure_mix(layers, group, args) for layers, group in zip(args.layers, args.layer_group_size, strict=True)]
    cores = {batch: decode_attention_cores(args.contexts, batch, args.core_repeats) for batch in args.batch}
    prefill = prefill_attention_cores(args.prefill_lengths, args.prefill_repeats)
    report = {"mixes": mixes, "decode_cores": cores, "prefill_cores": prefill}
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


def format_decode(mix: dict, batch: int, run: dict) -> list[str]:
    decode, contexts = run["decode"], list(run["decode"])
    rows = list(decode[contexts[0]])
    lines = [
        "",
        f"decode ms per token, {mix['layers']} layers, layer_group_size {mix['layer_group_size']}, batch {batch} (median)",
        "| row | F (ms) | " + " | ".join(map(str, contexts)) + " | growth |",
        "| " + " | ".join(["---"] * (len(contexts) + 3)) + " |",
    ]
    for row in rows:
        ms = [decode[c][row]["decode_ms_per_token"] if row in decode[c] else None for c in contexts]
        cells = " | ".join("–" if m is None else f"{m:.2f}" for m in ms)
        measured = [m for m in ms if m is not None]
        lines.append(f"| {row} | {run['fixed_ms'][row]:.2f} | {cells} | {measured[-1] / measured[0]:.2f}x |")
    for mode in ("", COMPILED):
        if HYBRID + mode in rows:
            speedup = [
                decode[c][BASE + mode]["decode_ms_per_token"] / decode[c][HYBRID + mode]["decode_ms_per_token"]
                for c in contexts
            ]
            lines.append(
                f"| hybrid speed-up vs GQA base{mode} | | " + " | ".join(f"{s:.2f}x" for s in speedup) + " | |"
            )
    minimax, llama = "transformers: MiniMax hybrid", "transformers: Llama (GQA)"
    if minimax in rows:
        ref = [
            decode[c][llama]["decode_ms_per_token"] / decode[c][minimax]["decode_ms_per_token"]
            if llama in decode[c]
            else None
            for c in contexts
        ]
        lines.append(
            "| MiniMax speed-up vs Llama | | " + " | ".join("–" if r is None else f"{r:.2f}x" for r in ref) + " | |"
        )
    for goal in run["goals"]:
        lines.append(f"goal: {goal['goal']}: {goal['value']:.2f}x, {'holds' if goal['holds'] else 'does not hold'}")
    return lines


def format_report(report: dict) -> str:
    lines = []
    for mix in report["mixes"]:
        for batch, run in mix["runs"].items():
            lines += format_decode(mix, batch, run)
        lines += [
            "",
            f"cache bytes per token (one sequence), {mix['layers']} layers, layer_group_size {mix['layer_group_size']}",
            "| tokens | GQA live | GQA analytic | hybrid live | hybrid analytic | GQA / hybrid |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in mix["cache_bytes_per_token"]:
            lines.append(
                f"| {row['context']} | {row['gqa_measured']:.1f} | {row['gqa_analytic']} | {row['hybrid_measured']:.1f} | "
                f"{row['hybrid_analytic']:.1f} | {row['gqa_measured'] / row['hybrid_measured']:.2f}x |"
            )
    for batch, cores in report["decode_cores"].items():
        lines += [
            "",
            f"decode attention of one layer, one new token (batch {batch}, ms, median)",
            "| context | GQA enable_gqa | GQA grouped rows (base) | MLA absorbed (hybrid) | MLA / GQA rows |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in cores:
            lines.append(
                f"| {row['context']} | {row['gqa_enable_gqa_ms']:.3f} | {row['gqa_rows_ms']:.3f} | "
                f"{row['mla_absorbed_ms']:.3f} | {row['mla_absorbed_ms'] / row['gqa_rows_ms']:.2f} |"
            )
    lines += [
        "",
        "prefill, attention core only (B=1, fp32)",
        "| length | chunked Lightning ms | softmax SDPA ms | softmax / Lightning |",
        "| --- | --- | --- | --- |",
    ]
    for row in report["prefill_cores"]:
        lines.append(
            f"| {row['length']} | {row['lightning_ms']:.1f} | {row['softmax_ms']:.1f} | "
            f"{row['softmax_ms'] / row['lightning_ms']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
