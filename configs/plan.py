"""Paper-scale planner: a profile's parameters, ZeRO-3 memory per GPU, cache bytes, FLOPs, tokens per day and
serving layout, for the Ling-2.0 base and the Ling-2.6 hybrid of its model, from its ``ModelConfig`` and
``cfg.cluster``; printed as a table and logged to MLflow. The formulas and their conventions are in
``configs.sizing``; tests/configs/test_plan.py checks them against the model code.

    python -m configs.plan --profile ling26_1t [--mfu 0.4] [--gpus N] [--peak-tflops 989] [--serve-context 32768]
        [--serve-batch 8] [--no-log]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from configs.pipeline import PROFILES, PipelineConfig, resolve
from configs.sizing import (
    GIB,
    H100_BF16_DENSE_TFLOPS,
    LAYOUTS,
    Layout,
    cache_bytes,
    flops_per_token,
    param_count,
    serving_memory,
    suggest_serving,
    tokens_per_day,
    zero3_memory,
)

LAYOUT_NAMES = {"base": "Ling-2.0 base (GQA)", "hybrid": "Ling-2.6 hybrid (Lightning + MLA)"}
# The contexts the cache rows are printed at: pre-training's 4K, the 2.0 models' 32K, the 2.6 mid-training's 256K.
CONTEXTS = (4096, 32768, 262144)


@dataclass(frozen=True)
class Cluster:
    """The sizes the planner reads from ``cfg.cluster`` (``configs.cluster.ClusterConfig``)."""

    data_parallel: int
    tensor_parallel: int
    expert_parallel: int
    gpus_per_node: int
    gpu_memory_gib: float


def build_plan(
    cfg: PipelineConfig,
    cluster: Cluster,
    *,
    gpus: int,
    mfu: float,
    peak_tflops: float,
    serve_batch: int,
    serve_context: int,
) -> dict[str, dict[str, float]]:
    """Every row of the table as {row key: {layout: value}}: numbers only, units in the key."""
    m = cfg.model
    # Pre-training trains the base; migration (and everything after) the hybrid, each at its own window.
    train_shape = {
        "base": (cfg.pretrain.loop.micro_batch_size, cfg.pretrain.loop.seq_len),
        "hybrid": (cfg.migrate.micro_batch_size, cfg.migrate.seq_len),
    }
    dp = cluster.data_parallel
    loop, mig = cfg.pretrain.loop, cfg.migrate
    migrate_steps = sum(
        phase.steps for phase in (mig.linear_warmup, mig.partial_training, mig.mla_warmup, mig.continued_pretraining)
    )
    # Each stage's token budget: steps x micro-batch x accumulation x window x data-parallel ranks.
    stage_tokens = {
        "base": loop.max_steps * loop.micro_batch_size * loop.grad_accum_steps * loop.seq_len * dp,
        "hybrid": migrate_steps * mig.micro_batch_size * mig.grad_accum_steps * mig.seq_len * dp,
    }
    rows: dict[str, dict[str, float]] = {}

    def put(key: str, layout: Layout, value: float) -> None:
        rows.setdefault(key, {})[layout] = float(value)

    for layout in LAYOUTS:
        count = param_count(m, layout)
        put("params_total", layout, count.main)
        put("params_mtp", layout, count.mtp)
        put("params_embedding", layout, count.embedding)
        put("params_non_embedding", layout, count.main - count.embedding)
        put("params_active", layout, count.active)
        put("params_active_non_embedding", layout, count.active_non_embedding)
        micro_batch, seq_len = train_shape[layout]
        memory = zero3_memory(
            m, layout, data_parallel=cluster.data_parallel, micro_batch_size=micro_batch, seq_len=seq_len
        )
        for part, value in memory.items():
            put(f"zero3_{part}_gib_per_gpu", layout, value / GIB)
        put("zero3_fits_gpu", layout, memory["total"] <= cluster.gpu_memory_gib * GIB)
        with_ep = zero3_memory(
            m, layout, data_parallel=cluster.data_parallel, micro_batch_size=micro_batch, seq_len=seq_len,
            expert_parallel=cluster.expert_parallel,
        )  # fmt: skip
        put("zero3_total_with_ep_gib_per_gpu", layout, with_ep["total"] / GIB)
        for context in CONTEXTS:
            cache = cache_bytes(m, layout, context)
            put(f"cache_kib_per_token_{context // 1024}k", layout, cache["per_token_amortised"] / 1024)
            put(f"cache_mib_per_sequence_{context // 1024}k", layout, cache["per_sequence"] / 2**20)
        flops = flops_per_token(m, layout, seq_len)
        put("train_seq_len", layout, seq_len)
        put("forward_gflop_per_token", layout, flops["forward"] / 1e9)
        put("attention_gflop_per_token", layout, flops["forward_attention"] / 1e9)
        put("training_gflop_per_token", layout, flops["training"] / 1e9)
        put("six_n_gflop_per_token", layout, 6 * count.active_non_embedding / 1e9)
        per_day = tokens_per_day(flops["training"], gpus=gpus, mfu=mfu, peak_tflops=peak_tflops)
        put("tokens_per_day_billions", layout, per_day / 1e9)
        put("stage_tokens_trillions", layout, stage_tokens[layout] / 1e12)
        put("stage_days", layout, stage_tokens[layout] / per_day)
        weights, cache = serving_memory(
            m, layout, tensor_parallel=cluster.tensor_parallel, pipeline_parallel=1,
            context_len=serve_context, batch=serve_batch,
        )  # fmt: skip
        put("serve_configured_gib_per_gpu", layout, (weights + cache) / GIB)
        suggestion = suggest_serving(
            m, layout, gpu_memory_gib=cluster.gpu_memory_gib, gpus_per_node=cluster.gpus_per_node,
            context_len=serve_context, batch=serve_batch,
        )  # fmt: skip
        put("serve_suggested_tp", layout, suggestion.tensor_parallel)
        put("serve_suggested_ep", layout, suggestion.expert_parallel)
        put("serve_suggested_pp", layout, suggestion.pipeline_parallel)
        put("serve_suggested_gib_per_gpu", layout, (suggestion.weights_per_gpu + suggestion.cache_per_gpu) / GIB)
    return rows


ROW_LABELS = {
    "params_total": "total parameters (no MTP), B",
    "params_mtp": "MTP layer parameters, B",
    "params_embedding": "embedding + lm_head, B",
    "params_non_embedding": "non-embedding parameters, B",
    "params_active": "active parameters per token, B",
    "params_active_non_embedding": "active non-embedding, B",
    "zero3_model_states_gib_per_gpu": "ZeRO-3 model states (16 B/param / DP), GiB/GPU",
    "zero3_gathered_layers_gib_per_gpu": "ZeRO-3 working set (2 × largest layer + stacked experts), GiB/GPU",
    "zero3_activations_gib_per_gpu": "activations (checkpointed) + fp32 logits, GiB/GPU",
    "zero3_total_gib_per_gpu": "ZeRO-3 training total, GiB/GPU",
    "zero3_fits_gpu": "fits the GPU (1 = yes)",
    "zero3_total_with_ep_gib_per_gpu": "same, experts over cluster.expert_parallel (DeepSpeed-MoE, not our engine)",
    "train_seq_len": "training window (tokens)",
    "forward_gflop_per_token": "forward GFLOP/token",
    "attention_gflop_per_token": "  of which attention mixing",
    "training_gflop_per_token": "training GFLOP/token (3 × fwd, MTP incl.)",
    "six_n_gflop_per_token": "6N (Kaplan) GFLOP/token, for reference",
    "tokens_per_day_billions": "training tokens/day, B",
    "stage_tokens_trillions": "stage tokens (pretrain / migrate phases), T",
    "stage_days": "days for those tokens at this rate",
    "serve_configured_gib_per_gpu": "serving at cluster TP, GiB/GPU",
    "serve_suggested_tp": "suggested serving TP",
    "serve_suggested_ep": "suggested serving EP",
    "serve_suggested_pp": "suggested serving PP (nodes)",
    "serve_suggested_gib_per_gpu": "suggested layout, GiB/GPU",
}
for _context in CONTEXTS:
    ROW_LABELS[f"cache_kib_per_token_{_context // 1024}k"] = f"cache @{_context // 1024}K, KiB/token (amortised)"
    ROW_LABELS[f"cache_mib_per_sequence_{_context // 1024}k"] = f"cache @{_context // 1024}K, MiB/sequence"


def _format(key: str, value: float) -> str:
    if key.startswith("params_"):
        return f"{value / 1e9:.3f}"
    if value.is_integer() and abs(value) < 1e7:
        return f"{int(value)}"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def render_table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per quantity, one column per layout."""
    lines = [f"| quantity | {' | '.join(LAYOUT_NAMES[lay] for lay in LAYOUTS)} |", "|---|---:|---:|"]
    for key, values in rows.items():
        cells = " | ".join(_format(key, values[lay]) for lay in LAYOUTS)
        lines.append(f"| {ROW_LABELS[key]} | {cells} |")
    return "\n".join(lines)


# Where the pipeline leaves each layout's Hugging Face checkpoint (model/export.py, model/export_hybrid.py).
CHECKPOINTS = {"base": "data/pretrain/checkpoint", "hybrid": "data/publish/hf_model"}


def serving_commands(rows: dict[str, dict[str, float]]) -> str:
    """``vllm serve`` and SGLang launch lines per layout at the suggested layout (printed, not run here)."""
    lines = []
    for layout in LAYOUTS:
        tp = int(rows["serve_suggested_tp"][layout])
        pp = int(rows["serve_suggested_pp"][layout])
        path = CHECKPOINTS[layout]
        vllm = f"vllm serve {path} --trust-remote-code --tensor-parallel-size {tp} --enable-expert-parallel"
        sglang = f"python -m sglang.launch_server --model-path {path} --trust-remote-code --tp {tp * pp} --ep {tp * pp}"
        if pp > 1:
            vllm += f" --pipeline-parallel-size {pp}"
            sglang += f" --nnodes {pp} --node-rank $NODE_RANK --dist-init-addr $HEAD_IP:5000"
        lines += [f"# {LAYOUT_NAMES[layout]}", vllm, sglang]
    return "\n".join(lines)


def cluster_of(cfg: PipelineConfig) -> Cluster:
    c = cfg.cluster
    return Cluster(
        data_parallel=c.data_parallel,
        tensor_parallel=c.tensor_parallel,
        expert_parallel=c.expert_parallel,
        gpus_per_node=max(1, c.gpus_per_node),
        # A CPU profile names no GPU; plan it against one H100 (80 GB) so its rows still read as GPU numbers.
        gpu_memory_gib=c.gpu_memory_gib or 80,
    )


def log_plan(
    cfg: PipelineConfig, rows: dict[str, dict[str, float]], table: str, params: dict[str, float | int | str]
) -> str:
    """One MLflow run in the profile's experiment (the project's embedded store unless configured): the inputs as
    params, every row as a ``<layout>.<row>`` metric, the table and the rows as artifacts. Returns the run id."""
    import mlflow

    from lineage.runs import configure

    configure(cfg.lineage.experiment, cfg.lineage.tracking_uri)
    with mlflow.start_run(run_name=f"plan-{cfg.profile}", tags={"ling26.plan": cfg.profile}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({f"{lay}.{key}": values[lay] for key, values in rows.items() for lay in LAYOUTS})
        mlflow.log_text(table, "plan.md")
        mlflow.log_dict(rows, "plan.json")
        return run.info.run_id


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(
        prog="python -m configs.plan",
        description="Print a profile's paper-scale plan (parameters, ZeRO-3 memory per GPU, cache bytes, FLOPs, "
        "tokens per day, serving layout) for the Ling-2.0 base and the Ling-2.6 hybrid, and log it to MLflow "
        "(params, one metric per row, the table as plan.md) in the project's store. Nothing is trained or built.",
    )
    parser.add_argument("--profile", default="ling26_1t", choices=sorted(PROFILES))
    parser.add_argument("--overrides", default=None, help="dotted overrides, as `workflows.cli run --overrides`")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation for tokens/day (0.4)")
    parser.add_argument(
        "--gpus", type=int, default=None, help="GPUs training for tokens/day (default: cluster.data_parallel)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
        help=f"per-GPU peak dense bf16 TFLOPS (default {H100_BF16_DENSE_TFLOPS:g}: H100/H200 SXM, no sparsity)",
    )  # fmt: skip
    parser.add_argument(
        "--serve-batch", type=int, default=8, help="concurrent sequences for the serving layout (8)"
    )  # fmt: skip
    parser.add_argument(
        "--serve-context", type=int, default=32768,
        help="tokens per serving sequence (32768; at most model.max_position_embeddings)",
    )  # fmt: skip
    parser.add_argument(
        "--log", action=argparse.BooleanOptionalAction, default=True,
        help="log the plan to MLflow as a run named plan-<profile> (default); --no-log only prints",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cfg = resolve(args.profile, args.overrides)
    cluster = cluster_of(cfg)
    gpus = args.gpus or cluster.data_parallel
    serve_context = min(args.serve_context, cfg.model.max_position_embeddings)
    rows = build_plan(
        cfg, cluster, gpus=gpus, mfu=args.mfu, peak_tflops=args.peak_tflops, serve_batch=args.serve_batch,
        serve_context=serve_context,
    )  # fmt: skip
    table = render_table(rows)
    inputs = {
        "profile": cfg.profile, "data_parallel": cluster.data_parallel, "tensor_parallel": cluster.tensor_parallel,
        "expert_parallel": cluster.expert_parallel, "gpus_per_node": cluster.gpus_per_node,
        "gpu_memory_gib": cluster.gpu_memory_gib, "gpus": gpus, "mfu": args.mfu, "peak_tflops": args.peak_tflops,
        "serve_batch": args.serve_batch, "serve_context": serve_context,
    }  # fmt: skip
    print(f"plan for {cfg.profile}: {json.dumps(inputs)}")
    print(table)
    print("serving at the suggested layouts (not run here):")
    print(serving_commands(rows))
    if args.log:
        print(f"logged to MLflow run {log_plan(cfg, rows, table, inputs)}")
    return rows


__all__ = ["Cluster", "build_plan", "cluster_of", "log_plan", "main", "render_table", "serving_commands"]


if __name__ == "__main__":
    main()
