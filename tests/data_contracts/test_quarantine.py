import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts import ContractViolation, QuarantineLedger, screen_documents

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
