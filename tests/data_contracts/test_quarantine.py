import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts import ContractViolation, QuarantineLedger, screen_documents
from data_contracts.quarantine import UnreadableRow


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


BAD_ROWS = [
    ({"doc_id": "nan-text", "source": "s", "text": math.nan}, "null_field"),
    ({"doc_id": None, "source": "s", "text": "a fine text here"}, "null_field"),
    ({"doc_id": 17, "source": "s", "text": "a fine text here"}, "wrong_type"),
    ({"doc_id": "int-text", "source": "s", "text": 12345}, "wrong_type"),
    ({"doc_id": "blank", "source": "s", "text": "   \n\t "}, "empty_text"),
    ({"doc_id": "empty", "source": "s", "text": ""}, "empty_text"),
    ({"doc_id": "bad-bytes", "source": "s", "text": b"caf\xe9 au lait, long enough"}, "invalid_utf8"),
    ({"doc_id": "surrogate", "source": "s", "text": "caf\udce9 au lait, long enough"}, "invalid_utf8"),
    ({"doc_id": "good", "source": "s", "text": "a second copy of the id"}, "duplicate_id"),
    ({"doc_id": "huge", "source": "s", "text": "x" * 500}, "oversize"),
    ({"doc_id": "tiny", "source": "s", "text": "hi"}, "too_short"),
    ({"doc_id": "id\udcc3", "source": "s", "text": "a fine text here"}, "invalid_utf8"),
    ({"doc_id": "bad-source", "source": "s\udcc3", "text": "a fine text here"}, "invalid_utf8"),
    ({"doc_id": "empty-source", "source": "", "text": "a fine text here"}, "wrong_type"),
    ({"doc_id": "nul", "source": "s", "text": "a fine\x00 text here"}, "control_characters"),
    ({"doc_id": "c1", "source": "s", "text": "mojibake \x85 text here"}, "control_characters"),
    ({"doc_id": "id\x1b", "source": "s", "text": "a fine text here"}, "control_characters"),
    ({"doc_id": "extra", "source": "s", "text": "a fine text here", "lang": "en"}, "unknown_field"),
    ({"doc_id": "deep", "source": "s", "text": _nested(100_000)}, "wrong_type"),
    (UnreadableRow("extra.jsonl:line9", "invalid_json", "Expecting value", b'{"doc_id": '), "invalid_json"),
]


def screen(rows, ledger, on_bad_rows="quarantine"):
    return screen_documents(rows, ledger, table="docs", min_chars=5, max_chars=100, on_bad_rows=on_bad_rows)


def test_each_bad_row_is_quarantined_with_its_rule():
    rows = [{"doc_id": "good", "source": "s", "text": "a perfectly good document"}] + [r for r, _ in BAD_ROWS]
    ledger = QuarantineLedger()
    result = screen(rows, ledger)
    assert result.kept["doc_id"].tolist() == ["good"]
    frame = ledger.frame()
    assert frame["rule"].tolist() == [rule for _, rule in BAD_ROWS]
    assert result.rows_in == len(rows) == len(result.kept) + result.rows_quarantined
    # The quarantine file can be written: surrogates and bytes are escaped in the excerpt.
    assert "\\udce9" in frame.loc[frame["row_id"] == "surrogate", "excerpt"].item()
    assert "#12" in frame["row_id"].tolist()  # the surrogate doc_id: named by its position
    frame.to_parquet(io.BytesIO(), index=False)


@pytest.mark.parametrize("row, rule", BAD_ROWS)
def test_raise_mode_names_row_and_rule(row, rule):
    rows = [{"doc_id": "good", "source": "s", "text": "a perfectly good document"}, row]
    with pytest.raises(ContractViolation, match=rule) as info:
        screen(rows, QuarantineLedger(), on_bad_rows="raise")
    assert info.value.rule == rule
    assert "row " in str(info.value)


row_strategy = st.one_of(
    st.fixed_dictionaries(
        {
            "doc_id": st.sampled_from(["a", "b", "c", "d"]),
            "source": st.just("s"),
            "text": st.one_of(
                st.text(max_size=150), st.binary(max_size=40), st.none(), st.integers(), st.just(math.nan)
            ),
        }
    ),
    st.fixed_dictionaries({"doc_id": st.one_of(st.none(), st.integers()), "text": st.text(max_size=20)}),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(row_strategy, max_size=30))
def test_counts_always_add_up(rows):
    ledger = QuarantineLedger()
    result = screen(rows, ledger)
    assert result.rows_in == len(rows)
    assert len(result.kept) + result.rows_quarantined == len(rows)
    assert len(ledger.frame()) == result.rows_quarantined
    assert result.kept["doc_id"].is_unique


any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)


@settings(max_examples=50, deadline=None)
@given(
    row_id=st.one_of(any_text, st.none(), st.integers()),
    detail=any_text,
    value=st.one_of(any_text, st.binary(max_size=600), st.lists(st.integers() | any_text), st.floats()),
)
def test_quarantine_frame_can_always_be_written(row_id, detail, value):
    ledger = QuarantineLedger()
    ledger.add("docs", row_id, "wrong_type", detail, value)
    frame = ledger.frame()
    frame.to_parquet(io.BytesIO(), index=False)
    assert len(frame.loc[0, "excerpt"]) <= 120
