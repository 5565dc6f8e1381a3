"""``benchmarks/long_context.py`` runs end to end at tiny contexts and reports what BENCHMARKS.md copies
(timings are not checked: tests never time anything; the cache bytes are exact and are)."""

from benchmarks import long_context


def test_long_context_script_reports_every_table(capsys):
    report = long_context.main(
        ["--contexts", "40", "72", "--steps", "2", "--no-reference", "--prefill-lengths", "32",
         "--prefill-repeats", "1", "--core-repeats", "1"]
    )  # fmt: skip
    assert list(report["decode"]) == [40, 72]
    assert set(report["decode"][40]) == {"ours: hybrid", "ours: GQA base"}
    for row in report["cache_bytes_per_token"]:
        assert row["gqa_measured"] == row["gqa_analytic"]
        assert abs(row["hybrid_measured"] - row["hybrid_analytic"]) < 1e-6
    assert [row["context"] for row in report["decode_cores"]] == [40, 72]
    assert all(row[f"{core}_ms"] > 0 for row in report["decode_cores"] for core in ("gqa_rows", "mla_absorbed"))
    printed = capsys.readouterr().out
    assert "decode attention of one layer" in printed and "hybrid speed-up vs GQA base" in printed
