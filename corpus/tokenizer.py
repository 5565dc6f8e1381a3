"""Byte-level BPE tokenizer trained with Hugging Face ``tokenizers``.

Digits are split one per token before the byte-level step: a tiny model learns arithmetic far more easily
when ``123`` is always ``1 2 3`` than when BPE merges arbitrary digit runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOS, PAD)
# Tool-call markup is atomic, as in production chat templates: generation stops exactly on "</call>" and
# the environment's "<result>" never fuses with a model token. Added as ordinary (decoded) tokens.
MARKUP_TOKENS = ("<call>", "</call>", "<result>", "</result>")


def train_tokenizer(texts: Iterable[str], *, vocab_size: int) -> tokenizers.Tokenizer:  # noqa: F821
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(MARKUP_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens(list(MARKUP_TOKENS))
    return tokenizer


def save_tokenizer(tokenizer: tokenizers.Tokenizer, out_dir: Path) -> Path:  # noqa: F821
    """Write ``tokenizer.json`` plus the files ``PreTrainedTokenizerFast.from_pretrained`` expects."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": PAD,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": EOS, "pad_token": PAD}, indent=2, sort_keys=True) + "\n"
    )
    return out_dir


def load_tokenizer(path: Path) -> tokenizers.Tokenizer:  # noqa: F821
    from tokenizers import Tokenizer

    file = path / "tokenizer.json" if path.is_dir() else path
    return Tokenizer.from_file(str(file))
