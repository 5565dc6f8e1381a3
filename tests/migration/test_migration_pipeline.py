"""convert(): a report entry per step, a model that runs and decodes with its cache like a full forward; and
the two measurements it is built on."""

import math

import pytest
import torch

from model.hybrid_cache import HybridCache
from model.migration import STEPS, convert, heldout_loss, logits_kl
from model.mla import MultiLatentAttention


@pytest.mark.parametrize("kv_init", ["replicate", "first_of_group"])
def test_convert_reports_every_step_and_decodes_like_a_full_forward(cfg, base, calibration, heldout, kv_init):
    logged = []
    model, report = convert(
        base, cfg, calibration, kv_init=kv_init, heldout_batches=heldout, log=lambda step, m: logged.append((step, m))
    )
    assert [step for step, _ in logged] == list(STEPS) and list(report) == ["base", *STEPS]
    assert math.isfinite(report["base"]["heldout_loss"])
    for step in STEPS:
        entry = report[step]
        for key in ("kl_vs_base", "kl_vs_previous", "heldout_loss"):
            assert math.isfinite(entry[key]) and entry[key] >= 0, (step, key)
    assert report["lightning"]["kl_vs_previous"] == report["lightning"]["kl_vs_base"]
    # Each later step moves the model less than the Lightning conversion did (untrained Lightning layers).
    assert report["qk_norm_fusion"]["kl_vs_previous"] < report["lightning"]["kl_vs_base"]
    assert report["transmla"]["kl_vs_previous"] < report["lightning"]["kl_vs_base"]
    assert sorted(report["transmla"]["layers"]) == [3, 4] and sorted(report["qk_norm_fusion"]["layers"]) == [3, 4]
    assert isinstance(model.model.layers[3].attention, MultiLatentAttention)

    ids = torch.randint(0, cfg.vocab_size, (2, 26), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full = model(ids).logits
        # A 20-token prefill crosses the 16-token Lightning chunk; then one token at a time (absorbed MLA decode).
        out = model(ids[:, :20], use_cache=True)
        steps = [out.logits]
        for t in range(20, 26):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    assert isinstance(out.past_key_values, HybridCache)
    assert out.past_key_values.latents[3].tensor.shape == (2, 26, cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_metrics(base, make_base, heldout):
    assert logits_kl(base, base, heldout) == 0.0
    other = make_base(seed=1)
    assert logits_kl(base, other, heldout) > 0
    # heldout_loss is the model's own next-token loss, token-weighted over batches.
    (ids,) = heldout[:1]
    with torch.no_grad():
        lm_loss = base(ids, labels=ids).lm_loss.item()
    assert heldout_loss(base, [ids]) == pytest.approx(lm_loss, rel=1e-5)
    # Padding: masked positions are left out of both averages.
    mask = torch.ones_like(ids)
    mask[:, :5] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    assert math.isfinite(logits_kl(base, other, [batch])) and math.isfinite(heldout_loss(base, [batch]))
    assert logits_kl(base, base, [batch]) == 0.0
    with pytest.raises(ValueError, match="empty"):
        logits_kl(base, other, [])
