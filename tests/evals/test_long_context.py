"""The pass-key haystack: deterministic by seed, as long as asked and no longer, the needle where the depth
says; a reader that finds the key scores 1.0 at every length and depth, one that guesses scores 0."""

import itertools
import re
from pathlib import Path

import pytest

from configs.base import apply_overrides, parse_overrides
from configs.evaluation import RetrievalConfig
from corpus.tokenizer import train_tokenizer
from evals.long_context import (
    HEADER,
    OBJECTS,
    SUBJECTS,
    TAILS,
    VERBS,
    evaluate_retrieval,
    filler_sentence,
    haystack,
    make_haystack,
    retrieved,
)
from inference.sampling import Generation


@pytest.fixture(scope="module")
def tokenizer():
    import random

    rng = random.Random(0)
    return train_tokenizer([" ".join(filler_sentence(rng) for _ in range(20)) for _ in range(50)], vocab_size=300)


def words(text: str) -> int:
    return len(text.split())


def test_same_arguments_same_haystack_and_the_seed_changes_it(tokenizer):
    assert make_haystack(tokenizer, 200, 0.5, seed=3) == make_haystack(tokenizer, 200, 0.5, seed=3)
    assert make_haystack(words, 200, 0.5, seed=3) == make_haystack(words, 200, 0.5, seed=3)
    prompts = {make_haystack(tokenizer, 200, 0.5, seed=s)[0] for s in range(5)}
    assert len(prompts) == 5


@pytest.fixture(scope="module")
def longest_sentence(tokenizer) -> int:
    """Tokens of the costliest filler sentence the generator can write, found over every combination."""
    sentences = [
        f" {s} {v} {o}{' ' + t if t else ''}." for s, v, o, t in itertools.product(SUBJECTS, VERBS, OBJECTS, TAILS)
    ]
    return max(len(e.ids) for e in tokenizer.encode_batch(sentences))


@pytest.mark.parametrize("length", [97, 256, 1000, 4096])
@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_prompt_fills_its_length_without_exceeding_it(tokenizer, longest_sentence, length, depth):
    stack = haystack(tokenizer, length, depth, seed=1)
    assert stack.prompt_tokens == len(tokenizer.encode(stack.prompt).ids) <= length
    # Short of the length by less than one more sentence would cost.
    assert stack.prompt_tokens > length - longest_sentence


def test_the_key_is_the_only_number_and_sits_at_its_depth(tokenizer):
    positions = []
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        prompt, answer = make_haystack(tokenizer, 800, depth, seed=7)
        assert re.findall(r"\d+", prompt) == [answer] and len(answer) == 5
        name = re.search(r"What is the pass key of (\w+)\?\n$", prompt).group(1)
        needle = f"The pass key of {name} is {answer}."
        positions.append(prompt.index(needle))
    body_start = len(HEADER)
    assert positions[0] == body_start
    assert positions == sorted(positions) and len(set(positions)) == 5
    last, answer = make_haystack(tokenizer, 800, 1.0, seed=7)
    assert last.rstrip("\n").rsplit("\n", 1)[0].endswith(f"is {answer}.")  # right before the question


def test_a_length_too_short_for_the_needle_says_the_minimum(tokenizer):
    with pytest.raises(ValueError, match=r"needs at least \d+ tokens"):
        make_haystack(tokenizer, 10, 0.5, seed=0)
    with pytest.raises(ValueError, match="depth"):
        make_haystack(tokenizer, 100, 1.5, seed=0)


def test_retrieved_reads_the_first_number():
    assert retrieved("Answer: 12345", "12345")
    assert retrieved("12345 is it", "12345")
    assert not retrieved("Answer: 123456", "12345")
    assert not retrieved("1 then 12345", "12345")
    assert not retrieved("no idea", "12345")


class Reader:
    """An engine-shaped reader: lengths in words, answers by ``answer(prompt)``."""

    def __init__(self, answer):
        self.answer = answer
        self.prompts: list[str] = []

    def encode(self, text: str) -> list[str]:
        return text.split()

    def generate(self, prompts, params):
        self.prompts += prompts
        return [Generation(prompt_ids=[], text=self.answer(p)) for p in prompts]


def oracle(prompt: str) -> str:
    name = re.search(r"What is the pass key of (\w+)\?", prompt).group(1)
    return "Answer: " + re.search(rf"The pass key of {name} is (\d+)\.", prompt).group(1)


CFG = RetrievalConfig(lengths=(40, 120, 500), depths=(0.0, 0.5, 1.0), samples_per_cell=3)


def test_an_oracle_reader_scores_one_everywhere():
    reader = Reader(oracle)
    table = evaluate_retrieval(reader, CFG, checkpoint="oracle", seed=5, trained_context=120)
    assert len(table) == 9 and (table["accuracy"] == 1.0).all() and (table["n"] == 3).all()
    assert list(table.loc[table["beyond_context"], "length"].unique()) == [500]
    assert len(set(reader.prompts)) == 27  # every haystack differs
    # The same seed gives the same haystacks; another seed others.
    again = Reader(oracle)
    evaluate_retrieval(again, CFG, checkpoint="oracle", seed=5)
    other = Reader(oracle)
    evaluate_retrieval(other, CFG, checkpoint="oracle", seed=6)
    assert again.prompts == reader.prompts and not set(other.prompts) & set(reader.prompts)


def test_a_wrong_reader_scores_zero_and_is_reported():
    table = evaluate_retrieval(Reader(lambda p: "Answer: 0"), CFG, checkpoint="guess")
    assert (table["accuracy"] == 0.0).all() and (table["correct"] == 0).all() and not table["beyond_context"].any()


def test_checkpoints_from_the_migration_on_count_the_extended_context_as_trained():
    from configs.pipeline import tiny_cpu
    from evals.run import trained_contexts

    cfg = tiny_cpu()
    names = {name: Path(name) for name in ("pretrain", "migrate", "post_train", "distill")}
    contexts = trained_contexts(cfg, names)
    extended = cfg.migrate.context_extension.max_seq_len
    assert extended >= 8 * cfg.pretrain.loop.seq_len
    assert contexts == {"pretrain": cfg.pretrain.loop.seq_len, "migrate": extended, "post_train": extended,
                        "distill": extended}  # fmt: skip
    no_extension = apply_overrides(cfg, parse_overrides({"migrate.context_extension.stages": []}))
    assert set(trained_contexts(no_extension, names).values()) == {cfg.pretrain.loop.seq_len}
