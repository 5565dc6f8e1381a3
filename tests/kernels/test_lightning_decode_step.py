"""``lightning_decode_step`` (the torch one-token path) is the recurrence of ``naive_recurrent_lightning`` at T = 1."""

import pytest
import torch

from kernels.lightning import naive_recurrent_lightning
from kernels.lightning.decode_step import lightning_decode_step
from kernels.testing import assert_close

G_H = torch.tensor([-3.0, -0.25, -0.01])  # fast, medium and slow heads


def _token(B, H, K, V, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, 1, H, K, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(B, 1, H, V, generator=gen, dtype=dtype)
    state = torch.randn(B, H, K, V, generator=gen, dtype=torch.float32 if dtype != torch.float64 else dtype)
    return q, k, v, state


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize(("B", "K", "V"), [(1, 8, 8), (3, 8, 12), (2, 16, 4)])
def test_decode_step_equals_the_recurrent_reference(B, K, V, with_state):
    q, k, v, state = _token(B, 3, K, V, torch.float64)
    h0 = state if with_state else None
    o_ref, ht_ref = naive_recurrent_lightning(q, k, v, G_H.double(), initial_state=h0, output_final_state=True)
    o, ht = lightning_decode_step(q, k, v, G_H.double(), initial_state=h0, output_final_state=True)
    assert_close("o", o_ref, o, 1e-14)
    assert_close("final state", ht_ref, ht, 1e-14)


def test_many_steps_equal_one_recurrent_pass():
    """Feeding tokens one by one, the state carried between calls, reproduces the T-token recurrence."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 9, 3, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    o_ref, ht_ref = naive_recurrent_lightning(q, k, v, G_H.double(), output_final_state=True)
    state, outputs = None, []
    for t in range(9):
        o_t, state = lightning_decode_step(
            q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], G_H.double(), initial_state=state,
            output_final_state=True,
        )  # fmt: skip
        outputs.append(o_t)
    assert_close("o", o_ref, torch.cat(outputs, dim=1), 1e-13)
    assert_close("final state", ht_ref, state, 1e-13)


def test_bf16_inputs_keep_an_fp32_state_and_a_bf16_output():
    q, k, v, state = _token(2, 3, 8, 8, torch.bfloat16)
    o, ht = lightning_decode_step(q, k, v, G_H, scale=0.5, initial_state=state, output_final_state=True)
    assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
    o_ref, ht_ref = naive_recurrent_lightning(q, k, v, G_H, scale=0.5, initial_state=state, output_final_state=True)
    assert_close("o", o_ref, o, 1e-2)
    assert_close("final state", ht_ref, ht, 1e-6)
    assert lightning_decode_step(q, k, v, G_H)[1] is None


def test_more_than_one_token_is_refused():
    q, _, v, _ = _token(1, 3, 8, 8, torch.float32)
    two = torch.cat((q, q), dim=1)
    with pytest.raises(ValueError, match="one token"):
        lightning_decode_step(two, two, torch.cat((v, v), dim=1), G_H)
