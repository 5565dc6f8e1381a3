"""The publish stage's config (``publishing``): what a publish does and where it goes. The Hub token is deliberately not a field: it comes from ``HF_TOKEN``
in the environment only (``publishing.hub.token_from_env``), so no config dump, MLflow param or card can hold it.
"""

from __future__ import annotations

from typing import Literal

from configs.base import config

# Hugging Face's own default shard size, for the GPU profiles. The tiny model (~7.7 MB of fp32 tensors) ships
# in 4 MB shards, so every `make run` publishes the sharded layout (index included) that large models use.
HF_MAX_SHARD_BYTES = 5_000_000_000
TINY_MAX_SHARD_BYTES = 4_000_000


@config
class PublishConfig:
    repo_id: str = "ling26/ling26-tiny"
    # "dry_run" lays the repository out in a local folder exactly as the Hub would hold it (the default, so the
    # pipeline publishes without a network or a token); "hub" commits it to `endpoint`.
    mode: Literal["dry_run", "hub"] = "dry_run"
    endpoint: str = "https://huggingface.co"
    private: bool = True
    revision: str = "main"
    # None => `<state dir>/hub` (``lineage.paths.state_dir``); the repository lands in `<dry_run_dir>/<repo_id>`.
    dry_run_dir: str | None = None
    max_shard_bytes: int = TINY_MAX_SHARD_BYTES
    license: str = "apache-2.0"
    tags: tuple[str, ...] = ("ling26", "bailing_moe", "moe", "hybrid-attention", "text-generation")
    base_model: str | None = None
    # Stages whose run, DVC outputs and git state the card must link; a release missing one is refused.
    required_stages: tuple[str, ...] = ("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate")
    # Stages whose DVC outputs are data (the curated corpus, the evaluation tables), listed under the card's
    # `datasets`; the others hold checkpoints.
    dataset_stages: tuple[str, ...] = ("curate", "evaluate")
    # A release built from a dirty work tree is refused unless this is set; the card then says so.
    allow_dirty: bool = False
    # A release whose stage outputs DVC did not version (lineage.dvc=false) is refused unless this is set; the
    # card then says its data and checkpoints cannot be fetched by hash.
    allow_unversioned: bool = False
    max_new_tokens: int = 256
