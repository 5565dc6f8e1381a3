"""TokenBatches: seeded, resumable, and rank slices that add up to one process's batch."""

import itertools

import numpy as np
import pytest
import torch

from training.data import TokenBatches

TOKENS = np.arange(1000, dtype=np.uint16)  # token value == position, so a window shows where it came from


def take(batches, n):
    return [next(batches) for _ in range(n)]


def test_windows_are_contiguous_int64_of_seq_len_plus_one():
    batch = next(TokenBatches(TOKENS, 16, 4, seed=0))
    assert batch.dtype == torch.int64 and batch.shape == (4, 17)
    assert torch.equal(batch - batch[:, :1], torch.arange(17).expand(4, 17))
    assert (batch[:, 0] % 16 == 0).all()


def test_same_seed_same_batches_other_seed_other_batches():
    a, b, c = (take(TokenBatches(TOKENS, 16, 4, seed=s), 5) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_an_epoch_visits_every_window_once_then_reshuffles():
    batches = TokenBatches(TOKENS, 16, 4, seed=0)  # 62 windows -> 15 batches, 2 windows skipped
    first = torch.cat(take(batches, batches.batches_per_epoch))[:, 0] // 16
    assert len(set(first.tolist())) == 60
    second = torch.cat(take(batches, batches.batches_per_epoch))[:, 0] // 16
    assert batches.epoch == 1 and not torch.equal(first, second)


@pytest.mark.parametrize("stop", [0, 3, 15, 16, 31])
def test_resume_from_state_dict_continues_the_exact_sequence(stop):
    reference = take(TokenBatches(TOKENS, 16, 4, seed=7), 40)
    first = TokenBatches(TOKENS, 16, 4, seed=7)
    take(first, stop)
    resumed = TokenBatches(TOKENS, 16, 4, seed=7)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(take(resumed, 40 - stop), reference[stop:], strict=True))


def test_ranks_take_disjoint_slices_of_one_global_batch():
    single = TokenBatches(TOKENS, 16, 8, seed=3)
    ranks = [TokenBatches(TOKENS, 16, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(20):  # across an epoch boundary (7 batches per epoch)
        parts = [next(r) for r in ranks]
        assert not set(parts[0][:, 0].tolist()) & set(parts[1][:, 0].tolist())
        assert torch.equal(torch.cat(parts), next(single))


def test_state_moves_between_world_sizes_with_the_same_global_batch():
    single = TokenBatches(TOKENS, 16, 8, seed=0)
    take(single, 5)
    ranks = [TokenBatches(TOKENS, 16, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.load_state_dict(single.state_dict())
    assert torch.equal(torch.cat([next(r) for r in ranks]), next(single))


def test_state_of_other_data_is_refused():
    state = TokenBatches(TOKENS, 16, 4, seed=0).state_dict()
    for other in (
        TokenBatches(TOKENS, 8, 4, seed=0),
        TokenBatches(TOKENS, 16, 4, seed=1),
        TokenBatches(TOKENS[:-16], 16, 4, seed=0),
        TokenBatches(TOKENS, 16, 4, seed=0, world_size=2),
    ):
        with pytest.raises(ValueError, match="data state was saved with"):
            other.load_state_dict(state)


def test_too_few_tokens_for_one_global_batch_is_an_error():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TokenBatches(TOKENS[:40], 16, 4, seed=0)


def test_works_on_read_only_memory_maps(tmp_path):
    path = tmp_path / "train-00000.bin"
    TOKENS.astype("<u2").tofile(path)
    mapped = np.memmap(path, dtype="<u2", mode="r")
    for x, y in itertools.islice(zip(TokenBatches(mapped, 16, 4, 0), TokenBatches(TOKENS, 16, 4, 0), strict=False), 5):
        assert torch.equal(x, y)
