"""Fuzzing the user-document intake: the reader, the intake rules and the quarantine file they feed.

Whatever a file holds, intake never raises except the documented ``ContractViolation`` of raise mode
(naming the row and the rule of the first bad row); every row is kept or quarantined under a known rule;
what is kept is valid UTF-8 without disallowed control characters; and both frames can be written to
parquet, as the stage does.
"""

import io
import json
import tempfile
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus.sources import read_extra_documents
from data_contracts import ContractViolation, QuarantineLedger, screen_documents
from data_contracts.schemas import QUARANTINE_RULES

MIN_CHARS, MAX_CHARS = 5, 60  # small bounds, so that too_short and oversize happen
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every code point, lone surrogates and control characters included.
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
# Mostly texts that could be kept (so the properties of kept rows are exercised), some that cannot.
printable = st.characters(exclude_categories=("Cc", "Cs"))
clean_texts = st.text(alphabet=printable, min_size=1, max_size=80)
texts = st.one_of(
    clean_texts,
    clean_texts,
    st.text(alphabet=st.characters(exclude_categories=()), min_size=MIN_CHARS, max_size=80),
    st.text(alphabet="abc \t\r\n\x00\x1b\x7f\x85\udcc3", max_size=20).map(lambda t: t * 5),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)
simple_ids = st.sampled_from(["a", "b", "c", "d", "e", "f"])  # few, so that duplicate ids happen
ids = st.one_of(simple_ids, st.text(alphabet=printable, min_size=1, max_size=8), any_text, json_values)
good_rows = st.fixed_dictionaries(
    {"doc_id": simple_ids, "text": clean_texts}, optional={"source": st.sampled_from(["user", "web"])}
)
any_rows = st.fixed_dictionaries(
    {"doc_id": ids, "text": st.one_of(texts, json_values)},
    optional={"source": st.one_of(st.just("user"), any_text, json_values)},
)
# Rows with a field the intake does not know, among them one whose name is a lone surrogate.
extra_fields = st.dictionaries(st.sampled_from(["lang", "origin", "Text", "\udcc3"]), json_values, min_size=1)
rows = st.one_of(
    good_rows, good_rows, any_rows, st.builds(lambda row, extra: {**row, **extra}, good_rows | any_rows, extra_fields)
)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


json_lines = st.one_of(
    st.builds(
        lambda r, ascii_only: json.dumps(r, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"),
        rows,
        st.booleans(),
    ),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.binary(max_size=60),
    st.sampled_from([b"", b"   ", b"\t", b"\x00", b"\xef\xbb\xbf{}"]),
    st.sampled_from([60, 64, 65, 66, 1_000, 100_000]).map(_deep),
    st.integers(4_000, 6_000).map(lambda n: b'{"doc_id": "n", "text": ' + b"7" * n + b"}"),
)
# Line breaks inside a generated line would only make more lines; keep one generated value per line.
lines = json_lines.map(lambda line: line.replace(b"\n", b" ").replace(b"\r", b" "))


def _disallowed_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc" and ch not in "\t\n\r"


def _screen(raw_rows: list, on_bad_rows: str):
    ledger = QuarantineLedger()
    result = screen_documents(
        raw_rows, ledger, table="docs", min_chars=MIN_CHARS, max_chars=MAX_CHARS, on_bad_rows=on_bad_rows
    )
    return result, ledger.frame()


def check_intake(raw_rows: list) -> None:
    """The properties every intake must have, in both modes."""
    result, frame = _screen(raw_rows, "quarantine")
    assert result.rows_in == len(raw_rows) == len(result.kept) + result.rows_quarantined
    assert len(frame) == result.rows_quarantined
    assert set(frame["rule"]) <= set(QUARANTINE_RULES)
    assert (frame["row_id"].str.len() > 0).all()
    result.kept.to_parquet(io.BytesIO(), index=False)
    frame.to_parquet(io.BytesIO(), index=False)
    assert result.kept["doc_id"].is_unique
    for text in result.kept["text"]:
        text.encode("utf-8")
        assert MIN_CHARS <= len(text) <= MAX_CHARS and text.strip()
        assert not any(map(_disallowed_control, text))
    try:
        raised, _ = _screen(raw_rows, "raise")
    except ContractViolation as err:
        first = frame.iloc[0]
        assert (err.row_id, err.rule) == (first["row_id"], first["rule"])
        assert f"row {err.row_id!r} breaks rule {err.rule!r}" in str(err)
        str(err).encode("utf-8")
    else:
        assert frame.empty
        assert raised.kept.equals(result.kept)


@FUZZ
@given(st.lists(lines, max_size=12))
def test_jsonl_intake_never_crashes(file_lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "extra.jsonl"
        path.write_bytes(b"\n".join(file_lines))
        raw_rows = read_extra_documents(str(path))
    content = b"\n".join(file_lines).removeprefix(b"\xef\xbb\xbf")
    assert len(raw_rows) == sum(1 for line in content.split(b"\n") if line.strip())
    check_intake(raw_rows)


def _string_column(values: list[bytes | None]) -> pa.Array:
    # Parquet written by other tools can hold strings that are not UTF-8; pyarrow cannot build those from str.
    return pa.array(values, pa.binary()).view(pa.string())


def _strings(n: int, cells: st.SearchStrategy[bytes | None]) -> st.SearchStrategy[pa.Array]:
    return st.lists(cells, min_size=n, max_size=n).map(_string_column)


def _any_column(n: int) -> st.SearchStrategy[pa.Array]:
    """A column of ``n`` values of a type chosen at random."""
    cells = st.one_of(st.none(), st.binary(max_size=30), texts.map(lambda t: t.encode("utf-8", "replace")))
    return st.one_of(
        _strings(n, cells),
        st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=n, max_size=n).map(pa.array),
        st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n).map(pa.array),
        st.lists(st.one_of(st.none(), st.binary(max_size=30)), min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.binary())
        ),
        st.lists(st.lists(st.binary(max_size=8), max_size=2), min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.list_(pa.binary())).view(pa.list_(pa.string()))
        ),
    )


@st.composite
def parquet_tables(draw) -> pa.Table:
    """A table of documents, perhaps with one column replaced or added by one of any type."""
    n = draw(st.integers(0, 8))
    text_cells = st.one_of(clean_texts, clean_texts, texts).map(lambda t: t.encode("utf-8", "replace"))
    columns = {
        "doc_id": draw(_strings(n, simple_ids.map(str.encode) | st.binary(max_size=4) | st.none())),
        "text": draw(_strings(n, text_cells | st.binary(max_size=30) | st.none())),
    }
    if draw(st.booleans()):
        columns["source"] = draw(_strings(n, st.just(b"user") | st.binary(max_size=4)))
    if draw(st.booleans()):
        columns[draw(st.sampled_from(["doc_id", "source", "text", "lang", "\u00e9t\u00e9"]))] = draw(_any_column(n))
    return pa.table(columns)


@FUZZ
@given(parquet_tables())
def test_parquet_intake_never_crashes(table):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "extra.parquet"
        pq.write_table(table, path)
        raw_rows = read_extra_documents(str(path))
    assert len(raw_rows) == table.num_rows
    check_intake(raw_rows)


@FUZZ
@given(st.lists(rows | st.dictionaries(any_text, json_values, max_size=4), max_size=15))
def test_screening_arbitrary_rows_never_crashes(raw_rows):
    check_intake(raw_rows)
