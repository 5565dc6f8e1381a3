"""The Hugging Face folder: sharded safetensors with an index, the files remote code and generation need, weights
equal to the source checkpoint after loading with trust_remote_code, offline and without this repository."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from publishing_shapes import SHARD_BYTES
from safetensors.torch import load_file

from model.export import ARCHITECTURE_FILES, read_state_dict
from model.export_hybrid import HYBRID_ARCHITECTURE_FILES
from publishing import CheckpointError, build_hf_folder, weights_digest
from publishing.hf_folder import INDEX_NAME
from publishing.hub import tree_digest

LOAD_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    # An editable install of this repository would make it importable from anywhere; hide it.
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    assert importlib.util.find_spec("model") is None and importlib.util.find_spec("publishing") is None
    folder, names = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    import hashlib, torch
    state = model.state_dict()
    digest = hashlib.sha256()
    for name in sorted(names):
        t = state[name].detach().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    print(json.dumps({
        "digest": digest.hexdigest(),
        "module": type(model).__module__,
        "eos": model.generation_config.eos_token_id,
        "tokenizer_eos": tokenizer.eos_token_id,
    }))
    """
)


def test_folder_is_sharded_with_an_index_and_every_file(checkpoint, tmp_path):
    folder = build_hf_folder(checkpoint, tmp_path / "hf", max_shard_bytes=SHARD_BYTES, max_new_tokens=64)
    assert len(folder.weight_files) > 1
    index = json.loads((folder.path / INDEX_NAME).read_text())
    source = read_state_dict(checkpoint)
    assert set(index["weight_map"]) == set(source) and set(index["weight_map"].values()) == set(folder.weight_files)
    assert index["metadata"]["total_size"] == folder.tensor_bytes
    for name in folder.weight_files:
        shard = load_file(str(folder.path / name))
        assert sum(t.numel() * t.element_size() for t in shard.values()) <= SHARD_BYTES or len(shard) == 1
        assert all(index["weight_map"][tensor] == name for tensor in shard)
    assert not (folder.path / "model.safetensors").exists()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (folder.path / name).read_bytes() == (checkpoint / name).read_bytes(), name
    for name in ARCHITECTURE_FILES:
        assert (folder.path / name).read_bytes() == (checkpoint / name).read_bytes(), name
    generation = json.loads((folder.path / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["max_new_tokens"] == 64
    assert folder.weights_sha256 == weights_digest(source)


def test_folder_build_is_byte_stable(checkpoint, tmp_path):
    # Re-publishing identical content can only be a no-op if building it twice writes identical bytes.
    first = build_hf_folder(checkpoint, tmp_path / "a", max_shard_bytes=SHARD_BYTES, max_new_tokens=64)
    second = build_hf_folder(checkpoint, tmp_path / "b", max_shard_bytes=SHARD_BYTES, max_new_tokens=64)
    assert tree_digest(first.path) == tree_digest(second.path)


def test_folder_loads_offline_with_remote_code_without_this_repo(checkpoint, tmp_path):
    folder = build_hf_folder(checkpoint, tmp_path / "hf", max_shard_bytes=SHARD_BYTES, max_new_tokens=64)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    names = json.dumps(sorted(read_state_dict(checkpoint)))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(folder.path), names],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")
    assert loaded["digest"] == folder.weights_sha256
    assert loaded["eos"] == loaded["tokenizer_eos"] is not None


def test_hybrid_folder_loads_with_remote_code(hybrid_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = build_hf_folder(hybrid_checkpoint, tmp_path / "hf", max_shard_bytes=SHARD_BYTES, max_new_tokens=64)
    assert folder.architecture == "BailingMoeV2_5ForCausalLM" and len(folder.weight_files) > 1
    assert {p.name for p in folder.path.glob("*.py")} == set(HYBRID_ARCHITECTURE_FILES)
    model = AutoModelForCausalLM.from_pretrained(folder.path, trust_remote_code=True)
    source = read_state_dict(hybrid_checkpoint)
    state = model.state_dict()
    assert weights_digest({name: state[name] for name in source}) == folder.weights_sha256
    tokens = torch.arange(12)[None]
    with torch.no_grad():
        assert torch.isfinite(model(tokens).logits).all()


@pytest.mark.parametrize(
    ("missing", "message"),
    [("modeling_bailing_moe_v2.py", "modeling_bailing_moe_v2.py"), ("tokenizer.json", "tokenizer.json"),
     ("config.json", "no config.json")],
)  # fmt: skip
def test_incomplete_checkpoint_is_refused_by_name(checkpoint, tmp_path, missing, message):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / missing).unlink()
    with pytest.raises(CheckpointError, match=message):
        build_hf_folder(broken, tmp_path / "hf", max_shard_bytes=SHARD_BYTES, max_new_tokens=64)
    assert not (tmp_path / "hf").exists()


def test_non_empty_output_folder_is_refused(checkpoint, tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("someone else's file")
    with pytest.raises(CheckpointError, match="not empty"):
        build_hf_folder(checkpoint, tmp_path / "hf", max_shard_bytes=SHARD_BYTES, max_new_tokens=64)
