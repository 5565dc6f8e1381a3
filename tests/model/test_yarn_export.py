"""A YaRN-scaled hybrid exported in the official layout carries ``rope_scaling`` in config.json, and the
checkpoint's own modeling file (trust_remote_code) applies it as we do: equal logits at a long length."""

from __future__ import annotations

import dataclasses
import json

import torch

from configs.model import RopeScalingConfig, tiny_model
from model.export_hybrid import export_hybrid_hf, load_hybrid_hf
from model.hybrid import HybridForCausalLM


def test_exported_yarn_checkpoint_matches_ours_at_long_length(tmp_path):
    from transformers import AutoModelForCausalLM

    scaling = RopeScalingConfig(factor=8.0, original_max_position_embeddings=128)
    config = dataclasses.replace(tiny_model(), max_position_embeddings=1024, rope_scaling=scaling)
    torch.manual_seed(0)
    model = HybridForCausalLM(config).eval()
    folder = export_hybrid_hf(model, tmp_path / "ckpt")
    written = json.loads((folder / "config.json").read_text())
    assert written["rope_scaling"] == {**dataclasses.asdict(scaling)}
    assert written["max_position_embeddings"] == 1024
    assert load_hybrid_hf(folder).config.rope_scaling == scaling

    ids = torch.randint(0, config.vocab_size, (1, 1000))  # 7.8x the original context
    remote = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        ours, theirs = model(ids).logits, remote(ids).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_plain_checkpoint_stays_unscaled(tmp_path):
    model = HybridForCausalLM(dataclasses.replace(tiny_model(), num_nextn_predict_layers=0)).eval()
    folder = export_hybrid_hf(model, tmp_path / "ckpt")
    assert json.loads((folder / "config.json").read_text())["rope_scaling"] is None
    assert load_hybrid_hf(folder).config.rope_scaling is None
