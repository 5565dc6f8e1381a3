"""Sentence units for LPO: break rules, whitespace, the token cap, observations, and a property over random tokens."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.objectives.sentences import OBSERVATION_UNIT, batch_sentence_unit_ids, sentence_unit_ids


def units(texts, mask=None, cap=64):
    return sentence_unit_ids(texts, [1] * len(texts) if mask is None else mask, cap)


def test_breaks_after_terminal_punctuation_followed_by_space():
    texts = ["It", " is", " 3", ".", "5", ".", " Then", " go", "!", " Ok", "?"]
    assert units(texts) == [0] * 6 + [1] * 3 + [2] * 2


def test_semicolon_and_end_of_text_close_a_sentence():
    assert units(["a", ";", " b", ";"]) == [0, 0, 1, 1]


def test_newline_breaks_and_a_straddling_token_goes_with_its_last_character():
    # ".\n" ends the first sentence; " The" holds the first character of the next one.
    assert units(["12", "*", "3", "=", "36", "\n", "Answer", ":", " 36"]) == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert units(["Done", ".\n", "The", " end", ".", " Next"]) == [0, 0, 1, 1, 1, 2]
    assert units(["x", ".", " The"]) == [0, 0, 1]


def test_whitespace_tokens_attach_to_the_previous_sentence():
    assert units(["Hi", ".", " ", " ", "Yo"]) == [0, 0, 0, 0, 1]
    assert units(["a", "\n", "\n", "  ", "b"]) == [0, 0, 0, 0, 1]
    # With nothing before them, leading whitespace tokens join the first sentence.
    assert units([" ", "\n", "go", "."]) == [0, 0, 0, 0]


def test_cap_cuts_long_sentences_into_pieces():
    assert units(["w"] * 7, cap=3) == [0, 0, 0, 1, 1, 1, 2]
    assert units(["w"] * 4 + [".", " x"], cap=2) == [0, 0, 1, 1, 2, 3]


def test_observation_tokens_are_excluded_and_end_the_sentence():
    texts = ["<call>", '{"tool":1}', "</call>", "<result>", "7", "</result>\n", "so", " 7", "\n", "Answer: 7"]
    mask = [1, 1, 1, 0, 0, 0, 1, 1, 1, 1]
    assert units(texts, mask) == [0, 0, 0, -1, -1, -1, 1, 1, 1, 2]
    # A whitespace token right after an observation continues the sentence before it.
    assert units(["go", "<result>x</result>", "\n", "b"], [1, 0, 1, 1]) == [0, -1, 0, 1]


def test_argument_errors():
    with pytest.raises(ValueError, match="mask"):
        sentence_unit_ids(["a"], [1, 1])
    with pytest.raises(ValueError, match="max_unit_tokens"):
        sentence_unit_ids(["a"], [1], 0)


PIECES = st.sampled_from(["a", "bc", " d", ".", ". ", "!", "?", ";", "\n", " ", "", "3.5", ".\n", "x;", "  "])


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.tuples(PIECES, st.booleans()), min_size=0, max_size=32),
    cap=st.integers(1, 8),
)
def test_units_are_ordered_complete_and_capped(tokens, cap):
    texts = [t for t, _ in tokens]
    mask = [int(m) for _, m in tokens]
    out = units(texts, mask, cap)
    model = [u for u, m in zip(out, mask, strict=True) if m]
    assert all(u == OBSERVATION_UNIT for u, m in zip(out, mask, strict=True) if not m)
    assert all(u >= 0 for u in model)
    assert model == sorted(model)
    assert not model or set(model) == set(range(model[-1] + 1))
    assert all(model.count(u) <= cap for u in set(model))


def test_batch_helper_decodes_single_ids_and_pads():
    from corpus.tokenizer import train_tokenizer

    tok = train_tokenizer(["12*3=36\nAnswer: 36\nIt is. Then go!\n"] * 20, vocab_size=300)
    first = tok.encode("12*3=36\nAnswer: 36").ids
    second = tok.encode("It is. Then go!").ids
    out = batch_sentence_unit_ids(tok, [first, second], [[1] * len(first), [1] * len(second)], max_unit_tokens=64)
    assert out.shape == (2, max(len(first), len(second)))
    texts = [tok.decode([i]) for i in first]
    assert out[0, : len(first)].tolist() == sentence_unit_ids(texts, [1] * len(first))
    assert out[0].max() == 1 and out[1].max() == 1
    assert bool((out[1, len(second) :] == OBSERVATION_UNIT).all())
    with pytest.raises(ValueError, match="seq_len"):
        batch_sentence_unit_ids(tok, [first], [[1] * len(first)], seq_len=2)
