"""SFT: packing respects the row length and the loss sees response tokens only."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.objectives.sft import pack_examples, sft_loss

PAD, EOS, V = 0, 1, 11


def test_packing_layout():
    ids, mask = pack_examples([[5, 6], [7], [8, 8]], [[2, 3], [4], [9]], seq_len=8, pad_id=PAD, eos_id=EOS)
    assert ids.tolist() == [[5, 6, 2, 3, EOS, 7, 4, EOS], [8, 8, 9, EOS, PAD, PAD, PAD, PAD]]
    assert mask.tolist() == [[0, 0, 1, 1, 1, 0, 1, 1], [0, 0, 1, 1, 0, 0, 0, 0]]


@settings(max_examples=100, deadline=None)
@given(
    examples=st.lists(
        st.tuples(
            st.lists(st.integers(2, V - 1), min_size=1, max_size=6),
            st.lists(st.integers(2, V - 1), min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=10,
    ),
    seq_len=st.integers(14, 32),
)
def test_packing_respects_seq_len_and_keeps_every_example_in_order(examples, seq_len):
    prompts, responses = [p for p, _ in examples], [r for _, r in examples]
    ids, mask = pack_examples(prompts, responses, seq_len, PAD, EOS)
    assert ids.shape[1] == seq_len
    flat = [t for row in ids.tolist() for t in row if t != PAD]
    assert flat == [t for p, r in examples for t in (*p, *r, EOS)]
    assert int(mask.sum()) == sum(len(r) + 1 for r in responses)
    assert bool((mask.bool() <= (ids != PAD)).all())
    # Next-fit: a row is closed only when the next example would not have fit in it.
    for n in range(ids.shape[0] - 1):
        used = int((ids[n] != PAD).sum())
        next_row = ids[n + 1].tolist()
        first_size = next_row.index(EOS) + 1
        assert used + first_size > seq_len


def test_packing_errors():
    with pytest.raises(ValueError, match="more than seq_len"):
        pack_examples([[2, 3]], [[4, 5, 6]], seq_len=4, pad_id=PAD, eos_id=EOS)
    with pytest.raises(ValueError, match="non-empty"):
        pack_examples([[]], [[4]], seq_len=4, pad_id=PAD, eos_id=EOS)
    with pytest.raises(ValueError, match="prompts"):
        pack_examples([[2]], [], seq_len=4, pad_id=PAD, eos_id=EOS)


def test_loss_counts_only_response_tokens():
    ids, mask = pack_examples([[5, 6, 7], [8]], [[2, 3], [4, 9, 10]], seq_len=16, pad_id=PAD, eos_id=EOS)
    logits = torch.randn(1, 16, V, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss, stats = sft_loss(logits, ids, mask)
    # Positions whose next token is not a target: changing their logits must not move the loss.
    free = torch.ones(16, dtype=torch.bool)
    free[:-1] = mask[0, 1:] == 0
    changed = logits.detach().clone()
    changed[0, free] += 100 * torch.randn(int(free.sum()), V)
    assert sft_loss(changed, ids, mask)[0] == loss
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[0, free].abs().sum() == 0 and grad[0, ~free].abs().sum() > 0
    assert stats["num_tokens"] == 3 + 4
    manual = torch.nn.functional.cross_entropy(logits[0, :-1][mask[0, 1:].bool()], ids[0, 1:][mask[0, 1:].bool()])
    torch.testing.assert_close(loss, manual)


def test_global_denominator_makes_micro_batches_add_up():
    ids, mask = pack_examples([[5, 6]] * 6, [[2, 3, 4]] * 6, seq_len=12, pad_id=PAD, eos_id=EOS)
    logits = torch.randn(ids.shape[0], 12, V, generator=torch.Generator().manual_seed(1))
    full, _ = sft_loss(logits, ids, mask)
    total = mask[:, 1:].sum()
    parts = sum(
        sft_loss(logits[i : i + 1], ids[i : i + 1], mask[i : i + 1], num_tokens=total)[0] for i in range(ids.shape[0])
    )
    torch.testing.assert_close(parts, full)


def test_loss_shape_errors():
    ids = torch.zeros(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="logits"):
        sft_loss(torch.zeros(2, 7, V), ids, torch.ones_like(ids))
    with pytest.raises(ValueError, match="loss_mask"):
        sft_loss(torch.zeros(2, 8, V), ids, torch.ones(2, 7))
