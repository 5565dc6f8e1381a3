"""``benchmarks/long_context.py`` runs end to end at tiny contexts and reports what BENCHMARKS.md copies
(timings are not checked: tests never time anything; the cache bytes are exact and are). Tiny sizes: one
4-layer mix, eager rows only (the compiled step has its own tests in tests/inference)."""

import torch

from benchmarks import long_context
from model import HybridForCausalLM, Ling2ForCausalLM


def test_long_context_script_reports_every_table(capsys):
    report = long_context.main(
        ["--layers", "4", "--layer-group-size", "2", "--contexts", "40", "72", "--fixed-context", "16",
         "--steps", "2", "--batch", "1", "--no-reference", "--no-compile", "--prefill-lengths", "32",
         "--prefill-repeats", "1", "--core-repeats", "1"]
    )  # fmt: skip
    (mix,) = report["mixes"]
    assert (mix["layers"], mix["layer_group_size"]) == (4, 2)
    assert mix["layer_types"] == ["linear_attention", "full_attention"] * 2
    run = mix["runs"][1]
    assert list(run["decode"]) == [40, 72]
    assert set(run["decode"][40]) == set(run["fixed_ms"]) == {"ours: hybrid", "ours: GQA base"}
    for row in mix["cache_bytes_per_token"]:
        assert row["gqa_measured"] == row["gqa_analytic"]
        assert abs(row["hybrid_measured"] - row["hybrid_analytic"]) < 1e-6
    assert [row["context"] for row in report["decode_cores"][1]] == [40, 72]
    assert all(row[f"{core}_ms"] > 0 for row in report["decode_cores"][1] for core in ("gqa_rows", "mla_absorbed"))
    printed = capsys.readouterr().out
    assert "decode attention of one layer" in printed and "hybrid speed-up vs GQA base" in printed
    assert "4 layers, layer_group_size 2, batch 1" in printed


def test_fill_cache_grows_our_caches_to_the_context_with_spare_capacity():
    cfg = long_context.bench_config(layers=2, layer_group_size=2)
    ids = torch.zeros(2, long_context.PREFILL_TOKENS, dtype=torch.long)
    for model_class in (HybridForCausalLM, Ling2ForCausalLM):
        with torch.no_grad():
            cache = model_class(cfg).eval()(ids, use_cache=True).past_key_values
        long_context.fill_cache(cache, context=100, spare=6, seed=0)
        assert cache.get_seq_length() == 100
        buffers = list(cache.latents.values()) if model_class is HybridForCausalLM else cache.keys + cache.values
        assert all(b.length == 100 and b.capacity == 106 for b in buffers)


def test_goals_are_checked_per_batch_on_the_measured_contexts():
    def decode(hybrid_ms, base_ms):
        return {c: {"ours: hybrid": {"decode_ms_per_token": h}, "ours: GQA base": {"decode_ms_per_token": b}}
                for c, h, b in zip((1024, 16384), hybrid_ms, base_ms, strict=True)}  # fmt: skip

    goals = long_context.check_goals(decode((10.0, 12.0), (10.0, 30.0)), batch=1)
    assert [(g["value"], g["holds"]) for g in goals] == [(2.5, True), (1.2, True)]
    goals = long_context.check_goals(decode((10.0, 15.0), (10.0, 45.0)), batch=8)
    assert [(g["value"], g["holds"]) for g in goals] == [(3.0, False)]  # 32K not measured: no row
