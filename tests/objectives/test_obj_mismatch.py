"""Mismatch corrections: identical policies change nothing, KPop's band is METHODS §4.2's table, and each
method's rule (IcePop band, TIS cap, MIS whole-row mask) holds exactly; statistics are raw values."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.objectives.mismatch import (
    PROB_BUCKETS,
    MismatchConfig,
    binary_kl,
    bucket_name,
    kpop_mask,
    mismatch_correction,
)

METHODS = ["none", "icepop", "kpop", "tis", "mis"]

# METHODS §4.2: accepted ratio band k = p_train / p_infer, both directions, per (p_infer, phi). None = "≈0".
KPOP_TABLE = {
    (1e-4, 1e-4): (0.16, 2.72), (1e-4, 1e-3): (None, 8.2), (1e-4, 1e-2): (None, 37.6),
    (1e-3, 1e-4): (0.62, 1.48), (1e-3, 1e-3): (0.16, 2.72), (1e-3, 1e-2): (None, 8.1),
    (1e-2, 1e-4): (0.87, 1.14), (1e-2, 1e-3): (0.62, 1.47), (1e-2, 1e-2): (0.16, 2.70),
    (0.1, 1e-4): (0.96, 1.04), (0.1, 1e-3): (0.87, 1.13), (0.1, 1e-2): (0.63, 1.45),
    (0.5, 1e-4): (0.99, 1.01), (0.5, 1e-3): (0.96, 1.04), (0.5, 1e-2): (0.86, 1.14),
    (0.9, 1e-4): (0.997, 1.003), (0.9, 1e-3): (0.985, 1.012), (0.9, 1e-2): (0.95, 1.04),
}  # fmt: skip


def random_logps(seed, shape=(4, 16), noise=0.05):
    g = torch.Generator().manual_seed(seed)
    logp_infer = torch.log(torch.rand(shape, generator=g).clamp_min(1e-5))
    logp_train = (logp_infer + noise * torch.randn(shape, generator=g)).clamp(max=-1e-6)
    mask = torch.rand(shape, generator=g) > 0.2
    mask[:, 0] = True
    return logp_train, logp_infer, mask


def accepted_band(p_infer, direction, phi, n=50_001, k_min=1e-6, k_max=1e4):
    """Smallest and largest accepted k on a log grid (k * p_infer < 1), and whether the accepted set is one interval."""
    ks = np.exp(np.linspace(math.log(k_min), math.log(min(1 / p_infer, k_max)), n))[:-1]
    logp_train = torch.tensor(np.log(ks * p_infer), dtype=torch.float32)
    logp_infer = torch.full_like(logp_train, math.log(p_infer))
    ok = kpop_mask(logp_train[None], logp_infer[None], phi, direction)[0].numpy()
    idx = np.flatnonzero(ok)
    return ks[idx[0]], ks[idx[-1]], bool(idx[-1] - idx[0] + 1 == len(idx))


def exact_band(p_infer, phi, direction="both"):
    """The band from float64 binary KL root finding (an oracle independent of ``binary_kl``)."""

    def db(p, q):
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))

    def ok(k):
        pt = k * p_infer
        fwd = db(pt, p_infer) <= phi if direction in ("both", "train_infer") else True
        rev = db(p_infer, pt) <= phi if direction in ("both", "infer_train") else True
        return fwd and rev

    def edge(inside, outside):
        for _ in range(200):
            mid = math.sqrt(inside * outside)
            inside, outside = (mid, outside) if ok(mid) else (inside, mid)
        return inside

    high_limit = min(1 / p_infer, 1e4) * (1 - 1e-12)
    low = 1e-6 if ok(1e-6) else edge(1.0, 1e-6)
    high = high_limit if ok(high_limit) else edge(1.0, high_limit)
    return low, high


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("weighted", [True, False])
def test_identical_policies_mask_nothing_and_weigh_one(method, weighted):
    _, logp, mask = random_logps(0)
    weight, stats = mismatch_correction(logp, logp.clone(), mask, MismatchConfig(method=method, weighted=weighted))
    assert bool((weight[mask] == 1).all()) and bool((weight[~mask] == 0).all())
    for key in ("masked_fraction", "truncated_fraction", "logp_abs_diff", "k3_kl"):
        assert stats[key] == 0.0, key
    assert stats["ratio_min"] == stats["ratio_max"] == stats["weight_mean"] == 1.0
    assert stats["num_tokens"] == mask.sum()


@pytest.mark.parametrize(("p_infer", "phi"), sorted(KPOP_TABLE))
def test_kpop_band_matches_the_methods_table(p_infer, phi):
    low, high, one_interval = accepted_band(p_infer, "both", phi)
    assert one_interval
    oracle_low, oracle_high = exact_band(p_infer, phi)
    assert low == pytest.approx(oracle_low, rel=2e-3, abs=1e-5)
    assert high == pytest.approx(oracle_high, rel=2e-3)
    table_low, table_high = KPOP_TABLE[p_infer, phi]
    # The table prints two or three digits; 1 % covers its rounding (its p = 0.9 row is ~0.2 % narrower).
    assert low < 0.01 if table_low is None else low == pytest.approx(table_low, rel=0.01)
    assert high == pytest.approx(table_high, rel=0.01)


@pytest.mark.parametrize("p_infer", [1e-3, 0.1, 0.9])
def test_band_is_adaptive_and_follows_the_small_mismatch_formula(p_infer):
    phi = 1e-5
    low, high, _ = accepted_band(p_infer, "both", phi, k_min=0.5, k_max=1.5)
    half_width = math.sqrt(2 * phi * (1 - p_infer) / p_infer)
    assert 1 - low == pytest.approx(half_width, rel=0.1) and high - 1 == pytest.approx(half_width, rel=0.1)


def test_one_direction_variants_are_wider_and_both_is_their_intersection():
    p_infer, phi = 1e-3, 1e-4
    bands = {d: accepted_band(p_infer, d, phi) for d in ("both", "train_infer", "infer_train")}
    for direction, (low, high, _) in bands.items():
        oracle = exact_band(p_infer, phi, direction)
        assert (low, high) == pytest.approx(oracle, rel=2e-3), direction
    assert bands["train_infer"][0] < bands["both"][0] and bands["train_infer"][1] == pytest.approx(bands["both"][1])
    assert bands["infer_train"][1] > bands["both"][1] and bands["infer_train"][0] == pytest.approx(bands["both"][0])
    logp_train, logp_infer, _ = random_logps(1, noise=0.3)
    fwd = kpop_mask(logp_train, logp_infer, phi, "train_infer")
    rev = kpop_mask(logp_train, logp_infer, phi, "infer_train")
    assert torch.equal(kpop_mask(logp_train, logp_infer, phi, "both"), fwd & rev)


def test_binary_kl_is_zero_on_the_diagonal_positive_off_it_and_stable_near_one():
    logp = torch.log(torch.tensor([1e-8, 1e-3, 0.5, 0.999999]))
    assert bool((binary_kl(logp, logp) == 0).all())
    assert bool((binary_kl(logp, logp - 1e-3) > 0).all())
    # Confident tokens: 1 - p from expm1 keeps D_B finite and tiny rather than a 0/0 or log(0).
    near_one = torch.tensor([-1e-7])
    value = binary_kl(near_one, near_one * 1.01)
    assert torch.isfinite(value).all() and 0 <= float(value) < 1e-7
    # A token whose fp32 log-prob rounds to exactly 0 (p = 1): D_B(1 || q) = -log q, not -inf.
    certain = binary_kl(torch.tensor([0.0]), torch.tensor([math.log(0.9)]))
    assert float(certain) == pytest.approx(-math.log(0.9), rel=1e-5)


@pytest.mark.parametrize("weighted", [True, False])
def test_icepop_keeps_the_closed_band_with_weight_k(weighted):
    ks = torch.tensor([[0.49, 0.5, 1.0, 2.0, 5.0, 5.01]])
    logp_infer = torch.full_like(ks, math.log(0.01))
    logp_train = logp_infer + ks.log()
    weight, stats = mismatch_correction(
        logp_train,
        logp_infer,
        torch.ones_like(ks, dtype=torch.bool),
        MismatchConfig(method="icepop", weighted=weighted),
    )
    kept = torch.tensor([[False, True, True, True, True, False]])
    expected = torch.where(kept, ks if weighted else torch.ones_like(ks), 0.0)
    torch.testing.assert_close(weight, expected, rtol=1e-5, atol=0)
    assert stats["masked_fraction"] == pytest.approx(2 / 6)


def test_tis_truncates_never_masks_and_is_detached():
    ks = torch.tensor([[0.1, 1.0, 1.9, 2.0, 3.0, 50.0]])
    logp_infer = torch.full_like(ks, math.log(0.01))
    logp_train = (logp_infer + ks.log()).requires_grad_()
    weight, stats = mismatch_correction(
        logp_train, logp_infer, torch.ones_like(ks, dtype=torch.bool), MismatchConfig(method="tis")
    )
    torch.testing.assert_close(weight, ks.clamp(max=2.0), rtol=1e-5, atol=0)
    assert not weight.requires_grad
    assert stats["masked_fraction"] == 0 and stats["truncated_fraction"] == pytest.approx(2 / 6)


def test_mis_masks_whole_rows_by_their_sequence_ratio():
    # Row 0: ratio 1.5 * 1.2 = 1.8 <= 2 kept; row 1: 1.5 * 1.5 = 2.25 > 2 masked; row 2: 0.2 kept (no lower bound).
    ks = torch.tensor([[1.5, 1.2, 7.0], [1.5, 1.5, 1.0], [0.5, 0.4, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    logp_infer = torch.full_like(ks, math.log(0.01))
    logp_train = logp_infer + ks.log()
    weight, stats = mismatch_correction(logp_train, logp_infer, mask, MismatchConfig(method="mis"))
    expected = torch.tensor([[1.8, 1.8, 0.0], [0.0, 0.0, 0.0], [0.2, 0.2, 0.2]])
    torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-7)
    assert stats["masked_fraction"] == pytest.approx(3 / 8)
    with_floor, _ = mismatch_correction(logp_train, logp_infer, mask, MismatchConfig(method="mis", mis_min=0.5))
    assert bool((with_floor[2] == 0).all())
    geo, _ = mismatch_correction(
        logp_train, logp_infer, mask, MismatchConfig(method="mis", mis_unit="geometric_mean", weighted=False)
    )
    assert torch.equal(geo, mask.float())  # every row's geometric-mean ratio lies in [0, 2]


def test_long_rows_do_not_overflow_the_sequence_ratio():
    logp_infer = torch.full((2, 4000), math.log(0.01))
    logp_train = logp_infer + torch.tensor([[0.5], [-0.5]])
    weight, _ = mismatch_correction(
        logp_train, logp_infer, torch.ones(2, 4000, dtype=torch.bool), MismatchConfig(method="mis")
    )
    assert bool(torch.isfinite(weight).all())
    assert bool((weight[0] == 0).all()) and float(weight[1, 0]) == 0.0  # exp(-2000) underflows to 0, not NaN


def test_statistics_are_raw_and_bucketed_by_infer_probability():
    p_infer = torch.tensor([[5e-5, 5e-4, 5e-3, 0.05, 0.3, 0.7, 0.95, 1.0]])
    ks = torch.tensor([[3.0, 1.0, 1.0, 1.0, 1.2, 1.0, 1.0, 1.0]])
    logp_infer = p_infer.log()
    logp_train = (logp_infer + ks.log()).clamp(max=0.0)
    mask = torch.ones_like(ks, dtype=torch.bool)
    cfg = MismatchConfig(method="kpop", kpop_phi=1e-3)
    _, stats = mismatch_correction(logp_train, logp_infer, mask, cfg)
    log_k = logp_train - logp_infer
    assert stats["logp_abs_diff"] == pytest.approx(float(log_k.abs().mean()), rel=1e-6)
    assert stats["k3_kl"] == pytest.approx(float((log_k.exp() - 1 - log_k).mean()), rel=1e-5)
    # k = 3 at p = 5e-5 passes the loose band for rare tokens ([≈0, 8.2] at phi 1e-3); k = 1.2 at p = 0.3 fails.
    assert stats["masked_fraction"] == pytest.approx(1 / 8)
    for low, high in itertools.pairwise(PROB_BUCKETS):
        name = bucket_name(low, high)
        assert stats[f"tokens/{name}"] == (2 if high == 1.0 else 1)
        assert stats[f"masked_fraction/{name}"] == (1.0 if name == bucket_name(0.1, 0.5) else 0.0)
    # Every method reports the same raw statistics: they do not depend on what the method masks.
    for method in METHODS:
        _, other = mismatch_correction(logp_train, logp_infer, mask, MismatchConfig(method=method))
        assert other["logp_abs_diff"] == stats["logp_abs_diff"] and other["k3_kl"] == stats["k3_kl"]


def test_garbage_on_padding_never_leaks_and_bf16_is_upcast():
    logp_train, logp_infer, mask = random_logps(2)
    dirty_train, dirty_infer = logp_train.clone(), logp_infer.clone()
    dirty_train[~mask], dirty_infer[~mask] = float("nan"), float("-inf")
    for method in METHODS:
        cfg = MismatchConfig(method=method)
        clean = mismatch_correction(logp_train, logp_infer, mask, cfg)
        dirty = mismatch_correction(dirty_train, dirty_infer, mask, cfg)
        assert torch.equal(clean[0], dirty[0]), method
        assert all(torch.equal(clean[1][k], dirty[1][k]) for k in clean[1]), method
    low_train, low_infer = logp_train.bfloat16(), logp_infer.bfloat16()
    bf16 = mismatch_correction(low_train, low_infer, mask, MismatchConfig())
    fp32 = mismatch_correction(low_train.float(), low_infer.float(), mask, MismatchConfig())
    assert bf16[0].dtype == torch.float32 and torch.equal(bf16[0], fp32[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.floats(0.0, 1.0), method=st.sampled_from(METHODS))
def test_weights_are_finite_nonnegative_and_zero_exactly_where_masked(seed, noise, method):
    logp_train, logp_infer, mask = random_logps(seed, noise=noise)
    weight, stats = mismatch_correction(logp_train, logp_infer, mask, MismatchConfig(method=method))
    assert bool(torch.isfinite(weight).all()) and bool((weight >= 0).all())
    masked = mask & (weight == 0)
    assert stats["masked_fraction"] == pytest.approx(float(masked.sum() / mask.sum()), abs=1e-6)
    assert sum(float(stats[f"tokens/{bucket_name(lo, hi)}"]) for lo, hi in itertools.pairwise(PROB_BUCKETS)) == int(
        mask.sum()
    )


def test_shape_and_config_errors():
    logp_train, logp_infer, mask = random_logps(3)
    with pytest.raises(ValueError, match="logp_infer"):
        mismatch_correction(logp_train, logp_infer[:, :-1], mask, MismatchConfig())
    with pytest.raises(ValueError, match="mask"):
        mismatch_correction(logp_train, logp_infer, mask[:-1], MismatchConfig())
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        mismatch_correction(logp_train[0], logp_infer[0], mask[0], MismatchConfig())
    for bad in (
        {"method": "clip"},
        {"kpop_phi": 0.0},
        {"kpop_direction": "sideways"},
        {"icepop_low": 1.5},
        {"tis_cap": 0.5},
        {"mis_cap": 0.9},
        {"mis_unit": "token"},
    ):
        with pytest.raises(ValueError):
            MismatchConfig(**bad)
