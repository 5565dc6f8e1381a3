"""Hybrid checkpoints in the official Ling-2.5/2.6 layout: round trips, names, remote code offline, strict configs."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from configs.base import ConfigError
from model.export_hybrid import HYBRID_ARCHITECTURE_FILES, export_hybrid_hf, load_hybrid_hf
from model.hybrid import HybridForCausalLM
from model.hybrid_cache import HybridCache
from model.modeling_bailing_moe_v2_5 import BailingMoeV2_5Config, BailingMoeV2_5ForCausalLM


@pytest.fixture
def hybrid(cfg) -> HybridForCausalLM:
    torch.manual_seed(0)
    return HybridForCausalLM(dataclasses.replace(cfg, initializer_range=0.08)).eval()


def assert_same_model(a, b, tokens):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, tensor in state_a.items():
        assert tensor.dtype == state_b[name].dtype and torch.equal(tensor, state_b[name]), name
    with torch.no_grad():
        assert torch.equal(a(tokens).logits, b(tokens).logits)


def test_round_trip_with_mtp_is_bit_exact(hybrid, tokens, tmp_path):
    with torch.no_grad():
        for layer in hybrid.model.layers[1:]:
            layer.mlp.gate.expert_bias.normal_()
    export_hybrid_hf(hybrid, tmp_path, include_mtp=True)
    loaded = load_hybrid_hf(tmp_path, base=hybrid.config)
    assert loaded.config == hybrid.config
    assert_same_model(hybrid, loaded, tokens)
    assert torch.equal(loaded(tokens, labels=tokens).loss, hybrid(tokens, labels=tokens).loss)


def test_default_export_is_the_official_layout(cfg, hybrid, tmp_path):
    export_hybrid_hf(hybrid, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BailingMoeV2_5ForCausalLM"] and config["model_type"] == "bailing_hybrid"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_bailing_moe_v2_5.BailingMoeV2_5ForCausalLM"
    assert config["layer_types"] == list(cfg.layer_types) == ["linear_attention"] * 3 + ["full_attention"]
    for key in (
        "layer_group_size",
        "group_norm_size",
        "linear_silu",
        "q_lora_rank",
        "kv_lora_rank",
        "qk_rope_head_dim",
        "qk_nope_head_dim",
        "v_head_dim",
        "rope_interleave",
        "partial_rotary_factor",
    ):
        assert config[key] == getattr(cfg, key), key
    assert config["num_nextn_predict_layers"] == 0 and config["qk_head_dim"] == 32
    assert {p.name for p in tmp_path.glob("*.py")} == set(HYBRID_ARCHITECTURE_FILES)

    state = load_file(str(tmp_path / "model.safetensors"))
    assert not any(name.startswith(f"model.layers.{cfg.num_hidden_layers}.") for name in state)
    lightning = ("query_key_value", "query_layernorm", "key_layernorm", "g_proj", "g_norm", "dense")
    mla = ("q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "dense")
    names = [f"model.layers.0.attention.{n}.weight" for n in lightning]
    names += [f"model.layers.3.attention.{n}.weight" for n in mla]
    for name in [*names, "model.layers.3.mlp.gate.expert_bias", "model.word_embeddings.weight"]:
        assert name in state, name
    assert state["model.layers.0.attention.query_key_value.weight"].shape == (3 * 4 * 32, 128)
    # Decays and rotary frequencies are recomputed, never stored.
    assert not any("slope" in name or "inv_freq" in name for name in state)


def test_hf_wrapper_shares_weights_and_generates_like_the_cache_loop(hybrid, tokens, tmp_path):
    export_hybrid_hf(hybrid, tmp_path, include_mtp=True)
    hf = BailingMoeV2_5ForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(hf.config, BailingMoeV2_5Config) and hf.config.layer_types == list(hybrid.config.layer_types)
    assert_same_model(hybrid, hf, tokens)
    generated = hf.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=4, do_sample=False)
    with torch.no_grad():
        out = hybrid(tokens, past_key_values=HybridCache())
        greedy = [tokens]
        for _ in range(4):
            greedy.append(out.logits[:, -1:].argmax(-1))
            out = hybrid(greedy[-1], past_key_values=out.past_key_values)
    assert torch.equal(generated, torch.cat(greedy, 1))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("my_new_key", 1, "unknown config key my_new_key"), ("topk_method", "greedy", "topk_method"),
     ("qk_head_dim", 48, "qk_head_dim"), ("architectures", ["BailingMoeV2ForCausalLM"], "architectures"),
     ("layer_types", ["full_attention"] * 4, "layer_types")],
)  # fmt: skip
def test_unsupported_config_json_fails_loudly(hybrid, tmp_path, key, value, message):
    export_hybrid_hf(hybrid, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_hybrid_hf(tmp_path)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys
    # An editable install of this repository would make it importable from anywhere; hide it.
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    import torch
    from transformers import AutoModelForCausalLM
    for name in ("model", "configs", "kernels"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" in str(spec.origin), spec
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    lightning = next(m for n, m in sys.modules.items() if n.endswith(".lightning_attention"))
    tokens = torch.load(sys.argv[2])
    with torch.no_grad():
        logits = model(tokens).logits
    torch.save({"logits": logits, "class": type(model).__module__, "torch_path": lightning._project_kernel() is None},
               sys.argv[3])
    """
)


def test_trust_remote_code_loads_offline_without_this_repo(hybrid, tmp_path):
    ckpt, work = tmp_path / "ckpt", tmp_path / "elsewhere"
    work.mkdir()
    export_hybrid_hf(hybrid, ckpt)
    # 37 tokens: several chunks for the in-repo model (chunk 16), one for the checkpoint's default (64).
    tokens = torch.randint(0, hybrid.config.vocab_size, (2, 37), generator=torch.Generator().manual_seed(3))
    torch.save(tokens, work / "tokens.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(ckpt), "tokens.pt", "out.pt"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(work / "out.pt")
    assert out["class"].startswith("transformers_modules.") and out["torch_path"]
    with torch.no_grad():
        # Remote code runs the built-in torch Lightning path with another chunk size: equal up to rounding.
        torch.testing.assert_close(out["logits"], hybrid(tokens).logits, rtol=1e-5, atol=1e-5)
