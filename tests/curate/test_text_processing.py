import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus import dedup
from corpus.decontaminate import EvalIndex
from corpus.shards import read_shards, tokenize_documents, write_shards
from corpus.tokenizer import EOS, load_tokenizer, save_tokenizer, train_tokenizer

CORPUS = [f"def function_{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(200)] + [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Q: 12+7=?\n12+7=19\nAnswer: 19\n",
]


def test_exact_duplicates_ignore_whitespace():
    assert dedup.exact_duplicates(["a  b", "c", "a b\n", "c"]) == [None, None, 0, 1]


def test_near_duplicates_find_edited_copy_not_unrelated_text():
    base = "import os\nimport sys\n\ndef main(argv):\n    for arg in argv:\n        print(arg.upper())\n" * 4
    edited = base.replace("upper", "lower", 1)
    other = "class Parser:\n    def parse(self, text):\n        return [t for t in text.split(',') if t]\n" * 4
    found = dedup.near_duplicates([base, other, edited], shingle=5, permutations=64, bands=16, threshold=0.7, seed=0)
    assert found[0] is None and found[1] is None
    assert found[2] is not None and found[2][0] == 0 and found[2][1] >= 0.7


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=20, max_size=200))
def test_minhash_of_identical_texts_is_identical(text):
    sig = dedup.minhash_signatures([text, text], shingle=5, permutations=32, seed=3)
    assert np.array_equal(sig[0], sig[1])


def test_decontamination_ignores_template_ngrams_but_catches_content():
    eval_items = [(f"Q: what is the capital of land{i} in the north ?", f"city{i}") for i in range(50)]
    index = EvalIndex.build(eval_items, n=6)
    assert index.template_ngrams_ignored > 0
    assert index.shared_ngram("what is the capital of land999 in the south") is None
    leak = "notes: what is the capital of land7 in the north ? city7"
    assert index.shared_ngram(leak) is not None
    assert index.prompt_leak("Q:  what is the capital of LAND7 in the north ?")


def test_tokenizer_training_is_deterministic(tmp_path):
    first = save_tokenizer(train_tokenizer(CORPUS, vocab_size=300), tmp_path / "a")
    second = save_tokenizer(train_tokenizer(CORPUS, vocab_size=300), tmp_path / "b")
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    tok = load_tokenizer(first)
    assert tok.decode(tok.encode("Answer: 19").ids) == "Answer: 19"
    # Digits are always single tokens: the tiny model sees 1 2 3, never a merged 123.
    ids = tok.encode("x = 123456").ids
    digits = [tok.id_to_token(i) for i in ids if tok.id_to_token(i).isdigit()]
    assert digits == list("123456")


def test_shards_round_trip_and_detect_corruption(tmp_path):
    tok = train_tokenizer(CORPUS, vocab_size=300)
    eos = tok.token_to_id(EOS)
    tokens = tokenize_documents(tok, CORPUS, eos)
    assert (tokens == eos).sum() == len(CORPUS)
    entries = write_shards(tokens, tmp_path, split="train", shard_tokens=1000)
    entries += write_shards(tokens[:10], tmp_path, split="heldout", shard_tokens=1000)
    import json

    (tmp_path / "index.json").write_text(json.dumps(entries))
    assert np.array_equal(read_shards(tmp_path, "train"), tokens)
    first = tmp_path / entries[0]["file"]
    data = bytearray(first.read_bytes())
    data[0] ^= 1
    first.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        read_shards(tmp_path, "train")
