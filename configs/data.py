"""Configs of the task environments and the curation stage."""

from __future__ import annotations

from configs.base import ConfigError, config

ENVIRONMENT_FAMILIES = ("math", "code", "search", "tool_use", "workflow")
# The longest response (SFT response, candidate, preference side) any table contract accepts.
RESPONSE_MAX_CHARS = 4096


@config
class EnvironmentsConfig:
    families: tuple[str, ...] = ENVIRONMENT_FAMILIES
    min_difficulty: int = 1
    max_difficulty: int = 3
    sft_prompts_per_family: int = 400
    rl_prompts_per_family: int = 64
    eval_prompts_per_family: int = 64
    responses_per_prompt: int = 4
    sandbox_timeout_s: float = 2.0
    sandbox_memory_mb: int = 256
    # The code sandbox needs bubblewrap and user namespaces and refuses to run without them; true accepts
    # weaker isolation there (rlimits and an audit hook only: enough for mistakes, not for hostile code).
    sandbox_allow_weak_isolation: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(ENVIRONMENT_FAMILIES))
        if unknown:
            raise ConfigError(f"environments.families: unknown family {unknown[0]!r} (known: {ENVIRONMENT_FAMILIES})")
        if not 1 <= self.min_difficulty <= self.max_difficulty <= 5:
            raise ConfigError("environments: need 1 <= min_difficulty <= max_difficulty <= 5")
        if self.responses_per_prompt < 2:
            raise ConfigError("environments.responses_per_prompt must be >= 2 (shortest-correct needs a choice)")


@config
class CurateConfig:
    # Real local text for the pre-training mix: the Python standard library's sources and docstrings.
    stdlib_max_files: int = 100
    min_doc_chars: int = 32
    max_doc_chars: int = 16384
    # Environment text (rendered prompt + reference responses) added to the pre-training mix.
    env_pretrain_prompts_per_family: int = 2000
    # Mixture weight of the environment pages in the token stream (each page appears this many times, in
    # different positions): the tiny model needs many passes over the task formats to condition on them,
    # as the paper's CoT "pre-activation" mid-training does at scale.
    env_upsample: int = 4
    # Near-duplicate detection: MinHash over character shingles, LSH banding.
    shingle_chars: int = 5
    minhash_permutations: int = 64
    minhash_bands: int = 16
    near_duplicate_jaccard: float = 0.8
    # Decontamination: drop any training text sharing a word n-gram with an eval item.
    decontam_ngram: int = 8
    # Tokenizer and shards.
    vocab_size: int = 1024
    shard_tokens: int = 262144
    heldout_fraction: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 < self.near_duplicate_jaccard <= 1.0:
            raise ConfigError("curate.near_duplicate_jaccard must lie in (0, 1]")
        if self.minhash_permutations % self.minhash_bands:
            raise ConfigError("curate.minhash_permutations must be a multiple of curate.minhash_bands")
        if self.min_doc_chars >= self.max_doc_chars:
            raise ConfigError("curate.min_doc_chars must be below curate.max_doc_chars")
        if not 0.0 < self.heldout_fraction < 0.5:
            raise ConfigError("curate.heldout_fraction must lie in (0, 0.5)")
        if self.env_upsample < 1:
            raise ConfigError("curate.env_upsample must be >= 1")
        if self.vocab_size < 260:
            raise ConfigError("curate.vocab_size must exceed the 256 byte symbols plus special tokens")
