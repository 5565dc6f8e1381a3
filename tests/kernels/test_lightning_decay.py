"""Per-head slopes and per-layer log-decay of Lightning attention (METHODS.md §2.2)."""

import pytest
import torch

from kernels.lightning import lightning_log_decay, lightning_slopes


def test_slopes_for_four_heads():
    assert lightning_slopes(4).tolist() == [0.25, 0.0625, 0.015625, 0.00390625]


def test_slopes_power_of_two_are_geometric():
    slopes = lightning_slopes(16).double()
    start = 2 ** (-8 / 16)
    expected = torch.tensor([start ** (h + 1) for h in range(16)], dtype=torch.float64)
    torch.testing.assert_close(slopes, expected, rtol=1e-6, atol=0)


def test_slopes_non_power_of_two_interleave():
    # H = 6: the 4 slopes of H = 4, then every other slope of H = 8 (2^-1, 2^-3, ...), first 2 of them.
    assert lightning_slopes(6).tolist() == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    assert lightning_slopes(1).tolist() == [2**-8]


@pytest.mark.parametrize("num_layers", [2, 5, 32])
def test_official_and_vllm_rules_differ_by_one_layer(num_layers):
    slopes = lightning_slopes(8)
    for layer_idx in range(num_layers):
        official = lightning_log_decay(8, layer_idx, num_layers, rule="official")
        vllm = lightning_log_decay(8, layer_idx, num_layers, rule="vllm")
        # official uses (ℓ-1)/(L-1) where vLLM uses ℓ/(L-1): official is exactly vLLM one layer earlier,
        # and decays faster by slope/(L-1).
        if layer_idx > 0:
            assert torch.equal(official, lightning_log_decay(8, layer_idx - 1, num_layers, rule="vllm"))
        torch.testing.assert_close(official - vllm, -slopes / (num_layers - 1), rtol=1e-5, atol=1e-9)
        assert (official < 0).all() and (vllm < 0).all()


def test_layer_zero_factor_official():
    num_layers = 5
    g = lightning_log_decay(4, 0, num_layers)
    factor = g / -lightning_slopes(4)
    torch.testing.assert_close(factor, torch.full((4,), 1 + 1 / (num_layers - 1) + 1e-5), rtol=1e-6, atol=0)


def test_last_layer_decays_slowest():
    g = torch.stack([lightning_log_decay(4, layer, 8) for layer in range(8)])  # [L, H]
    assert (g[1:] > g[:-1]).all()


def test_single_layer_uses_plain_slopes():
    for rule in ("official", "vllm"):
        g = lightning_log_decay(4, 0, 1, rule=rule)
        torch.testing.assert_close(g, -lightning_slopes(4) * (1 + 1e-5), rtol=1e-7, atol=0)


def test_bad_arguments_fail_loudly():
    with pytest.raises(ValueError, match="layer_idx"):
        lightning_log_decay(4, 4, 4)
    with pytest.raises(ValueError, match="rule"):
        lightning_log_decay(4, 0, 4, rule="fla")
    with pytest.raises(ValueError, match="num_heads"):
        lightning_slopes(0)
