"""The RL benchmark scripts (``async_rl``, ``rl_corrections``) run end to end on minimal settings and return
the structure they print. Correctness only: nothing here looks at a wall time or a speed-up's size."""

import math
from pathlib import Path

import torch

from benchmarks import async_rl, rl_corrections

torch.set_num_threads(1)


def test_async_rl_runs_every_eta_on_the_same_updates_and_reports_speedups():
    args = "--etas 0 1 --seeds 1 --steps 2 --batch-groups 2 --samples 2"
    args += " --median-ms 1 --sigma 0.5 --eval-samples 2 --max-new-tokens 8"
    result = async_rl.main(args.split())
    assert result["latency"] == {"distribution": "lognormal", "median_s": 0.001, "sigma": 0.5}
    assert set(result["by_eta"]) == {"0", "1"}
    latency_runs = [r for r in result["runs"] if r["kind"] == "latency"]
    assert [r["eta"] for r in latency_runs] == [0, 1]
    # Every η trains the same number of updates on the same number of prompt groups.
    assert all(r["updates"] == 2 and r["groups"] == 4 for r in result["runs"])
    assert result["runs"][0]["max_staleness"] == 0  # η = 0 is synchronous
    assert result["by_eta"]["0"]["speedup_wall"] == 1.0
    for row in result["by_eta"].values():
        assert row["runs"] == 1 and row["wall_s_mean"] > 0 and math.isfinite(row["speedup_tokens_per_s"])
        assert 0.0 <= row["final_reward_mean"] <= 1.0 + 0.25  # share of the letter + the tool bonus
    assert result["compute_only_wall_s"] is not None


def test_rl_corrections_compares_methods_on_one_world_and_writes_the_plots(tmp_path):
    steps = 2
    args = f"--small --steps {steps} --warm-steps 2 --methods kpop none --threads 1 --out {tmp_path}"
    result = rl_corrections.main(args.split())
    assert (result["rollout_precision"], result["trainer_precision"], result["eta"]) == ("bf16", "fp32", 0)
    assert set(result["table"]) == set(result["curves"]) == {"kpop", "none"}
    for method, row in result["table"].items():
        for key in ("final_reward", "masked_fraction", "logp_abs_diff", "k3_kl"):
            assert math.isfinite(row[key]), (method, key)
        assert 0.0 <= row["masked_fraction"] <= 1.0 and row["k3_kl"] >= 0.0
        assert row["logp_abs_diff"] > 0.0  # bf16 engine against the fp32 trainer: a real gap
        assert result["curves"][method]["step"] == list(range(1, steps + 1))
    assert result["table"]["none"]["masked_fraction"] == 0.0
    # η = 0: the first step's rollouts do not depend on the method.
    assert result["curves"]["kpop"]["reward"][0] == result["curves"]["none"]["reward"][0]
    assert sorted(Path(p).name for p in result["plots"]) == sorted(
        f"{k}.png" for k in ("reward", "masked_fraction", "logp_abs_diff", "k3_kl")
    )
    assert all(Path(p).stat().st_size > 0 for p in result["plots"])
