"""``AppendBuffer`` (the decoding caches' storage) and the GQA ``KVCache`` built on it."""

import pytest
import torch

from configs.model import tiny_model
from model import KVCache, Ling2ForCausalLM, kv_cache_bytes_per_token
from model.append_buffer import AppendBuffer


def test_appends_equal_concatenation_across_growths():
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(2, 3, t, 4, generator=gen) for t in (5, 1, 1, 7, 1, 20, 1)]
    buffer = AppendBuffer(parts[0], dim=2)
    capacities = {buffer.capacity}
    for i, part in enumerate(parts[1:], start=2):
        filled = buffer.append(part)
        torch.testing.assert_close(filled, torch.cat(parts[:i], dim=2), rtol=0, atol=0)
        capacities.add(buffer.capacity)
        assert buffer.length == filled.shape[2] <= buffer.capacity
    assert len(capacities) > 2, "the buffer never grew"
    assert buffer.filled_bytes() == torch.cat(parts, dim=2).numel() * 4 < buffer.allocated_bytes()


def test_capacity_doubles_so_each_token_is_copied_a_bounded_number_of_times():
    buffer = AppendBuffer(torch.zeros(1, 1, 1), dim=1)
    grows = 0
    for _ in range(1023):
        before = buffer.capacity
        buffer.append(torch.ones(1, 1, 1))
        grows += buffer.capacity != before
    assert buffer.length == 1024 and grows == 10  # 1 -> 2 -> ... -> 1024


def test_select_rows_keeps_rows_and_appending_continues():
    first = torch.arange(24.0).view(3, 4, 2)
    buffer = AppendBuffer(first, dim=1)
    buffer.append(torch.full((3, 1, 2), -1.0))
    buffer.select_rows(torch.tensor([2, 0]))
    buffer.append(torch.full((2, 1, 2), -2.0))
    expected = torch.cat([first[[2, 0]], torch.full((2, 1, 2), -1.0), torch.full((2, 1, 2), -2.0)], dim=1)
    torch.testing.assert_close(buffer.tensor, expected, rtol=0, atol=0)


def test_batch_dim_cannot_be_the_growing_dim():
    with pytest.raises(ValueError, match="dim 0"):
        AppendBuffer(torch.zeros(2, 3), dim=0)


def test_kv_cache_bytes_per_token_analytic_equals_measured():
    cfg = tiny_model()
    torch.manual_seed(0)
    model = Ling2ForCausalLM(cfg).eval()
    B, S, new = 2, 9, 4
    with torch.no_grad():
        out = model(torch.randint(0, cfg.vocab_size, (B, S)), use_cache=True)
        cache = out.past_key_values
        for _ in range(new):
            cache = model(out.logits[:, -1:].argmax(-1), past_key_values=cache, use_cache=True).past_key_values
    assert isinstance(cache, KVCache) and cache.get_seq_length() == S + new
    live = cache.live_bytes()
    assert live["total"] / (B * (S + new)) == kv_cache_bytes_per_token(cfg, torch.float32)
    assert live["allocated"] >= live["total"]
