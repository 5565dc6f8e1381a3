"""Measure the migration's conversion steps on a briefly trained tiny base (not a test: ~1 min on one CPU core).

    .venv/bin/python tests/migration/measure_conversion.py [--steps 600] [--out report.json]

The tests use randomly initialised bases, the worst case for TransMLA's low-rank steps (independent kv heads,
flat spectra). This trains the tiny Ling-2.0 base on periodic token sequences (a random unit of 2-6 tokens
repeated, so next-token prediction needs attention) and reports, on held-out sequences:

* ``convert`` with both kv_init variants (KL vs base and vs the previous step, held-out loss per step),
* the MLA conversion alone, on a config whose every layer is softmax (layer_group_size 1: step 1 is then the
  identity, so the KL after step 3c is TransMLA's effect on a trained model), with the per-layer stats,
* baselines for the toy-rank MLA conversion: the same layers as a random MLA, their attention output zeroed,
  and lossless ranks (kv_lora_rank = G·(P + K), no q_lora_rank),
* QK-Norm fusion against dropping the norm without the calibrated rescale,

with the environment (torch version, seed, steps) so a number can be traced to its run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time

import torch

from configs.model import tiny_model
from model.hybrid import HybridForCausalLM
from model.ling2 import Ling2ForCausalLM
from model.migration import (
    convert,
    convert_to_mla,
    fuse_qk_norm,
    gqa_to_hybrid,
    heldout_loss,
    interim_layers,
    logits_kl,
)


def periodic_batches(num: int, seed: int, batch: int = 8, length: int = 32, vocab: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        rows = []
        for _ in range(batch):
            period = int(torch.randint(2, 7, (1,), generator=g))
            unit = torch.randint(0, vocab, (period,), generator=g)
            rows.append(unit.repeat(length // period + 1)[:length])
        out.append(torch.stack(rows))
    return out


def train_base(config, steps: int, seed: int) -> Ling2ForCausalLM:
    torch.manual_seed(seed)
    model = Ling2ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for ids in periodic_batches(steps, seed=seed + 1):
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def replaced(model, make_attention):
    out = copy.deepcopy(model)
    for i in interim_layers(out):
        out.model.layers[i].attention = make_attention(i)
    return out


def zeroed(model):
    out = copy.deepcopy(model)
    with torch.no_grad():
        for attention in interim_layers(out).values():
            attention.dense.weight.zero_()
    return out


def measure_mla_conversion(base, config, calibration, heldout) -> dict:
    """Steps 1 + 3a + 3c on an all-softmax ``config`` (step 1 is then the identity), with the baselines."""
    step1 = gqa_to_hybrid(base, config)
    fused, _ = fuse_qk_norm(step1, calibration)
    converted, stats = convert_to_mla(fused, calibration)
    fresh = HybridForCausalLM(config)
    nope_rows = config.qk_nope_head_dim + config.head_dim  # pass dims + carried residuals (at most) + values
    lossless_cfg = dataclasses.replace(config, kv_lora_rank=config.num_key_value_heads * nope_rows, q_lora_rank=None)
    lossless, _ = convert_to_mla(fuse_qk_norm(gqa_to_hybrid(base, lossless_cfg), calibration)[0], calibration)
    return {
        "kl_step1_vs_base": logits_kl(base, step1, heldout),
        "kl_fused_vs_base": logits_kl(base, fused, heldout),
        "kl_transmla_vs_fused": logits_kl(fused, converted, heldout),
        "kl_transmla_lossless_ranks_vs_fused": logits_kl(fused, lossless, heldout),
        "kl_random_mla_vs_fused": logits_kl(fused, replaced(fused, lambda i: fresh.model.layers[i].attention), heldout),
        "kl_zero_attention_vs_fused": logits_kl(fused, zeroed(fused), heldout),
        "heldout_loss": {"fused": heldout_loss(fused, heldout), "transmla": heldout_loss(converted, heldout)},
        "layers": {i: dataclasses.asdict(s) for i, s in stats.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = tiny_model()
    calibration, heldout = periodic_batches(4, seed=101), periodic_batches(4, seed=202)
    started = time.time()
    base = train_base(cfg, args.steps, args.seed)
    report = {
        "env": {"torch": torch.__version__, "python": platform.python_version(), "seed": args.seed,
                "train_steps": args.steps, "train_s": round(time.time() - started, 1)},
        "base_heldout_loss": heldout_loss(base, heldout),
    }  # fmt: skip
    for kv_init in ("replicate", "first_of_group"):
        _, steps = convert(base, cfg, calibration, kv_init=kv_init, heldout_batches=heldout)
        report[f"convert_{kv_init}"] = {k: v for k, v in steps.items()}

    all_softmax = dataclasses.replace(cfg, layer_group_size=1)
    hybrid = gqa_to_hybrid(base, cfg)
    fused_hybrid, _ = fuse_qk_norm(hybrid, calibration)
    dropped = copy.deepcopy(hybrid)
    for attention in interim_layers(dropped).values():
        attention.remove_qk_norm()
    report["qk_norm"] = {
        "kl_fused_vs_step1": logits_kl(hybrid, fused_hybrid, heldout),
        "kl_dropped_vs_step1": logits_kl(hybrid, dropped, heldout),
    }
    report["all_layers_mla"] = measure_mla_conversion(base, all_softmax, calibration, heldout)
    # Spare nope dims (qk_nope_head_dim > head_dim - rotary_dim, as in the real shapes) carry the rope residual.
    report["all_layers_mla_nope32"] = measure_mla_conversion(
        base, dataclasses.replace(all_softmax, qk_nope_head_dim=32), calibration, heldout
    )
    report["env"]["total_s"] = round(time.time() - started, 1)
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
