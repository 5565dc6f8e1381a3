"""The user-document reader and the intake rules together: one test per way a row can be bad, in both modes.

In quarantine mode the row lands in the ledger under its rule, the rest is kept, and both the kept frame
and the quarantine frame can be written to parquet; in raise mode the ``ContractViolation`` names the row
and the rule.
"""

import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus.sources import MAX_INT_DIGITS, MAX_JSON_DEPTH, read_extra_documents
from data_contracts import ContractViolation, QuarantineLedger, screen_documents
from data_contracts.quarantine import RawRow, UnreadableRow

GOOD = {"doc_id": "good", "source": "user", "text": "a perfectly good document"}
LONG = "a document long enough to keep, "


def intake(path: Path, on_bad_rows: str = "quarantine"):
    ledger = QuarantineLedger()
    result = screen_documents(
        read_extra_documents(str(path)), ledger, table="docs", min_chars=5, max_chars=500, on_bad_rows=on_bad_rows
    )
    # Whatever the input held, what the stage writes can be written.
    result.kept.to_parquet(io.BytesIO(), index=False)
    ledger.frame().to_parquet(io.BytesIO(), index=False)
    return result, ledger.frame()


def write_jsonl(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def row(**fields) -> str:
    return json.dumps({**GOOD, "doc_id": "bad", **fields})


def row_with_raw_text(raw_json: str) -> str:
    """A row whose text is ``raw_json`` as written, not a string (JSON that ``json.dumps`` cannot make)."""
    return '{"doc_id": "bad", "source": "user", "text": ' + raw_json + "}"


# (second line of the file, the row id the ledger must name, the rule)
JSONL_CASES = {
    "surrogate_doc_id": (row(doc_id="\udcc3"), "extra.jsonl:line2", "invalid_utf8"),
    "surrogate_source": (row(source="\udcc3"), "bad", "invalid_utf8"),
    "surrogate_text": (row(text=LONG + "\udcc3"), "bad", "invalid_utf8"),
    "surrogate_key": (json.dumps({**GOOD, "doc_id": "bad", "\udcc3": 1}), "bad", "unknown_field"),
    "deep_nesting": ("[" * 100_000 + "]" * 100_000, "extra.jsonl:line2", "json_too_deep"),
    "deep_but_parseable": (
        row_with_raw_text("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH),
        "extra.jsonl:line2",
        "json_too_deep",
    ),
    "huge_integer": (row_with_raw_text("9" * 5000), "extra.jsonl:line2", "number_too_large"),
    "nul_in_text": (row(text=LONG + "\x00" + LONG), "bad", "control_characters"),
    "escape_in_text": (row(text=LONG + "\x1b[31m" + LONG), "bad", "control_characters"),
    "del_in_text": (row(text=LONG + "\x7f"), "bad", "control_characters"),
    "c1_in_text": (row(text=LONG + "\x85"), "bad", "control_characters"),
    "nul_in_doc_id": (row(doc_id="bad\x00"), "extra.jsonl:line2", "control_characters"),
    "unknown_field": (row(lang="en"), "bad", "unknown_field"),
    "empty_source": (row(source=""), "bad", "wrong_type"),
    "null_source": (row(source=None), "bad", "null_field"),
    "not_an_object": (json.dumps([LONG]), "extra.jsonl:line2", "wrong_type"),
    "bare_string": (json.dumps(LONG), "extra.jsonl:line2", "wrong_type"),
    "invalid_json": ('{"doc_id": "bad", "text": ', "extra.jsonl:line2", "invalid_json"),
    "raw_control_in_json": (b'{"doc_id": "bad", "text": "a\x00b"}', "extra.jsonl:line2", "invalid_json"),
    "repeated_key": ('{"doc_id": "bad", "text": "one text", "text": "another"}', "extra.jsonl:line2", "invalid_json"),
    "not_utf8": (b'{"doc_id": "bad", "text": "caf\xe9 au lait"}', "extra.jsonl:line2", "invalid_utf8"),
    "encoded_surrogate": (
        '{"doc_id": "bad", "text": "x\udcc3"}'.encode("utf-8", "surrogatepass"),
        "extra.jsonl:line2",
        "invalid_utf8",
    ),
}


@pytest.mark.parametrize("line, row_id, rule", JSONL_CASES.values(), ids=JSONL_CASES.keys())
def test_bad_jsonl_row_is_quarantined_with_its_rule(tmp_path, line, row_id, rule):
    result, frame = intake(write_jsonl(tmp_path / "extra.jsonl", json.dumps(GOOD), line))
    assert result.kept["doc_id"].tolist() == ["good"]
    assert frame[["row_id", "rule"]].values.tolist() == [[row_id, rule]]
    assert result.rows_in == 2 == len(result.kept) + result.rows_quarantined


@pytest.mark.parametrize("line, row_id, rule", JSONL_CASES.values(), ids=JSONL_CASES.keys())
def test_bad_jsonl_row_raises_naming_row_and_rule(tmp_path, line, row_id, rule):
    with pytest.raises(ContractViolation) as info:
        intake(write_jsonl(tmp_path / "extra.jsonl", json.dumps(GOOD), line), on_bad_rows="raise")
    assert (info.value.row_id, info.value.rule) == (row_id, rule)
    assert f"row {row_id!r} breaks rule {rule!r}" in str(info.value)
    str(info.value).encode("utf-8")  # the message itself can be printed and logged


def test_surrogates_are_stored_escaped(tmp_path):
    _, frame = intake(write_jsonl(tmp_path / "extra.jsonl", row(doc_id="id\udcc3"), row(source="src\udcc3")))
    assert frame["excerpt"].tolist() == ["id\\udcc3", "src\\udcc3"]
    assert frame["row_id"].tolist() == ["extra.jsonl:line1", "bad"]


def test_tab_newline_and_carriage_return_are_kept(tmp_path):
    text = "a line\twith a tab\r\nand a second line\n"
    result, frame = intake(write_jsonl(tmp_path / "extra.jsonl", row(doc_id="ok", text=text)))
    assert result.kept["text"].tolist() == [text]
    assert frame.empty


def test_unknown_field_is_named(tmp_path):
    _, frame = intake(write_jsonl(tmp_path / "extra.jsonl", row(lang="en", url="https://example.org")))
    assert frame.loc[0, "detail"].startswith("unknown field 'lang' (and 1 more)")
    assert frame.loc[0, "excerpt"] == "en"


def test_integer_at_the_digit_limit_parses(tmp_path):
    _, frame = intake(write_jsonl(tmp_path / "extra.jsonl", row_with_raw_text("9" * MAX_INT_DIGITS)))
    assert frame["rule"].tolist() == ["wrong_type"]  # parsed: an integer is not a text


def test_blank_lines_are_not_rows_and_lines_keep_their_numbers(tmp_path):
    path = write_jsonl(tmp_path / "extra.jsonl", b"", b"  \t", "{", json.dumps(GOOD))
    rows = read_extra_documents(str(path))
    assert [r.origin for r in rows] == ["extra.jsonl:line3", "extra.jsonl:line4"]
    assert isinstance(rows[0], UnreadableRow) and isinstance(rows[1], RawRow)


def test_utf8_bom_is_not_a_bad_row(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    result, frame = intake(path)
    assert result.kept["doc_id"].tolist() == ["good"] and frame.empty


def invalid_utf8_strings(*values: bytes) -> pa.Array:
    """A parquet string column as other writers can produce it: bytes that need not be UTF-8."""
    return pa.array(values, pa.binary()).view(pa.string())


PARQUET_CASES = {
    "unknown_column": (
        pa.table({"doc_id": ["good", "bad"], "text": [LONG, LONG], "lang": ["en", "fr"]}),
        ["good", "bad"],
        "unknown_field",
    ),
    "integer_doc_id": (
        pa.table({"doc_id": [1, 2], "text": [LONG, LONG]}),
        ["extra.parquet:row0", "extra.parquet:row1"],
        "wrong_type",
    ),
    "invalid_utf8_doc_id": (
        pa.table({"doc_id": invalid_utf8_strings(b"caf\xe9"), "text": [LONG]}),
        ["extra.parquet:row0"],
        "invalid_utf8",
    ),
    "invalid_utf8_text": (
        pa.table({"doc_id": ["bad"], "text": invalid_utf8_strings(b"caf\xe9 " + LONG.encode())}),
        ["bad"],
        "invalid_utf8",
    ),
    "invalid_utf8_nested_text": (
        pa.table({"doc_id": ["bad"], "text": pa.ListArray.from_arrays([0, 1], invalid_utf8_strings(b"\xff"))}),
        ["bad"],
        "wrong_type",
    ),
    "control_characters": (pa.table({"doc_id": ["bad"], "text": [LONG + "\x00"]}), ["bad"], "control_characters"),
    "list_text": (pa.table({"doc_id": ["bad"], "text": [[LONG]]}), ["bad"], "wrong_type"),
}


@pytest.mark.parametrize("table, row_ids, rule", PARQUET_CASES.values(), ids=PARQUET_CASES.keys())
def test_bad_parquet_rows_are_quarantined_with_their_rule(tmp_path, table, row_ids, rule):
    pq.write_table(table, tmp_path / "extra.parquet")
    result, frame = intake(tmp_path / "extra.parquet")
    assert result.kept.empty
    assert frame["row_id"].tolist() == row_ids
    assert set(frame["rule"]) == {rule}
    with pytest.raises(ContractViolation) as info:
        intake(tmp_path / "extra.parquet", on_bad_rows="raise")
    assert (info.value.row_id, info.value.rule) == (row_ids[0], rule)


def test_parquet_written_by_pandas_keeps_its_rows(tmp_path):
    frame = pd.DataFrame([GOOD, {**GOOD, "doc_id": "other"}], index=[3, 8])  # a non-default index is stored
    frame["source"] = frame["source"].astype("category")  # read back dictionary-encoded
    frame.to_parquet(tmp_path / "extra.parquet")
    result, quarantined = intake(tmp_path / "extra.parquet")
    assert result.kept["doc_id"].tolist() == ["good", "other"] and quarantined.empty


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "extra.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"extra\.parquet is not readable parquet"):
        read_extra_documents(str(tmp_path / "extra.parquet"))


def test_nesting_at_the_depth_limit_parses(tmp_path):
    # The row object is one level, its text the other MAX_JSON_DEPTH - 1.
    depth = MAX_JSON_DEPTH - 1
    _, frame = intake(write_jsonl(tmp_path / "extra.jsonl", row_with_raw_text("[" * depth + "]" * depth)))
    assert frame["rule"].tolist() == ["wrong_type"]  # parsed: a list is not a text
