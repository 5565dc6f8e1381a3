"""Hugging Face checkpoints in the official Ling-2.0 layout: round trips, remote-code loading, strict configs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from configs.base import ConfigError
from model.attention import KVCache
from model.export import ARCHITECTURE_FILES, export_hf, load_hf
from model.modeling_bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM


def assert_same_model(a, b, tokens):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, tensor in state_a.items():
        assert tensor.dtype == state_b[name].dtype and torch.equal(tensor, state_b[name]), name
    with torch.no_grad():
        assert torch.equal(a(tokens).logits, b(tokens).logits)


def test_round_trip_with_mtp_is_bit_exact(cfg, model, tokens, tmp_path):
    with torch.no_grad():
        for layer in model.model.layers[1:]:
            layer.mlp.gate.expert_bias.normal_()  # a trained bias must survive too
    export_hf(model, tmp_path, include_mtp=True)
    loaded = load_hf(tmp_path, base=cfg)
    assert loaded.config == cfg
    assert_same_model(model, loaded, tokens)
    torch.testing.assert_close(loaded(tokens, labels=tokens).loss, model(tokens, labels=tokens).loss, rtol=0, atol=0)


def test_default_export_is_the_released_layout(cfg, model, tmp_path):
    export_hf(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BailingMoeV2ForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_bailing_moe_v2.BailingMoeV2ForCausalLM"
    assert config["num_nextn_predict_layers"] == 0 and config["use_rmsnorm"] and config["norm_topk_prob"]
    assert {p.name for p in tmp_path.glob("*.py")} == set(ARCHITECTURE_FILES)

    state = load_file(str(tmp_path / "model.safetensors"))
    L = cfg.num_hidden_layers
    assert not any(name.startswith(f"model.layers.{L}.") for name in state)
    for name in (
        "model.word_embeddings.weight", "model.norm.weight", "lm_head.weight",
        "model.layers.0.attention.query_key_value.weight", "model.layers.0.attention.dense.weight",
        "model.layers.0.attention.query_layernorm.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.15.down_proj.weight",
        "model.layers.1.mlp.shared_experts.up_proj.weight", "model.layers.1.post_attention_layernorm.weight",
    ):  # fmt: skip
        assert name in state, name
    assert state["model.layers.1.mlp.gate.expert_bias"].dtype == torch.float32

    loaded = load_hf(tmp_path, base=cfg)
    assert loaded.config.num_nextn_predict_layers == 0
    with torch.no_grad():
        tokens = torch.arange(10)[None]
        assert torch.equal(loaded(tokens).logits, model(tokens).logits)


def test_reference_convention_with_mtp_inside_num_hidden_layers_loads(cfg, model, tokens, tmp_path):
    export_hf(model, tmp_path, include_mtp=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] += config["num_nextn_predict_layers"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert_same_model(model, load_hf(tmp_path, base=cfg), tokens)


def test_tied_embeddings_round_trip(cfg, make_model, tokens, tmp_path):
    model = make_model(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.word_embeddings.weight
    export_hf(model, tmp_path, include_mtp=True)
    assert "lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))
    loaded = load_hf(tmp_path, base=model.config)
    assert loaded.lm_head.weight is loaded.model.word_embeddings.weight
    assert_same_model(model, loaded, tokens)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("my_new_key", 1, "unknown config key my_new_key"), ("use_rmsnorm", False, "use_rmsnorm"),
     ("score_function", "softmax", "score_function"), ("architectures", ["LlamaForCausalLM"], "architectures")],
)  # fmt: skip
def test_unsupported_config_json_fails_loudly(model, tmp_path, key, value, message):
    export_hf(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_hf(tmp_path)


def test_hf_wrapper_shares_weights_names_and_generation(cfg, model, tokens, tmp_path):
    export_hf(model, tmp_path, include_mtp=True)
    hf = BailingMoeV2ForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(hf.config, BailingMoeV2Config)
    assert_same_model(model, hf, tokens)
    ours, theirs = model(tokens, labels=tokens), hf(tokens, labels=tokens)
    assert torch.equal(ours.lm_loss, theirs.lm_loss) and torch.equal(ours.mtp_loss, theirs.mtp_loss)
    # The z-loss coefficient is a training knob, absent from a Hugging Face config.
    torch.testing.assert_close(theirs.loss, ours.lm_loss + cfg.mtp_loss_scaling_factor * ours.mtp_loss)

    generated = hf.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=4, do_sample=False)
    with torch.no_grad():
        out = model(tokens, past_key_values=KVCache())
        greedy = [tokens]
        for _ in range(4):
            greedy.append(out.logits[:, -1:].argmax(-1))
            out = model(greedy[-1], past_key_values=out.past_key_values)
    assert torch.equal(generated, torch.cat(greedy, 1))


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys, torch
    # An editable install of this repository would make it importable from anywhere; hide it.
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    from transformers import AutoModelForCausalLM
    assert importlib.util.find_spec("model") is None and importlib.util.find_spec("configs") is None
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    tokens = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.save({"logits": model(tokens).logits, "class": type(model).__module__}, sys.argv[3])
    """
)


def test_trust_remote_code_loads_offline_without_this_repo(model, tokens, tmp_path):
    ckpt, work = tmp_path / "ckpt", tmp_path / "elsewhere"
    work.mkdir()
    export_hf(model, ckpt)
    torch.save(tokens, work / "tokens.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(ckpt), "tokens.pt", "out.pt"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(work / "out.pt")
    assert out["class"].startswith("transformers_modules.")
    with torch.no_grad():
        assert torch.equal(out["logits"], model(tokens).logits)
