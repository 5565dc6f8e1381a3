"""Raw text sources for the pre-training mix: the machine's own Python standard library, the task
environments' rendered examples, and optional user-supplied documents (JSONL or parquet)."""

from __future__ import annotations

import ast
import codecs
import hashlib
import json
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts.quarantine import RawRow, UnreadableRow

CODE_CHUNK_CHARS = 4000


def stable_seed(*parts: object) -> int:
    """A seed derived from names, identical across processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def stdlib_files(max_files: int, seed: int) -> list[Path]:
    """A deterministic sample of the standard library's ``.py`` files (tests and site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if "site-packages" not in p.parts
        and "test" not in p.parts
        and "tests" not in p.parts
        and "idle_test" not in p.parts
    )
    ranked = sorted(files, key=lambda p: stable_seed(seed, p.relative_to(root).as_posix()))
    return sorted(ranked[:max_files], key=lambda p: p.relative_to(root).as_posix())


def _lines_within(block: str, limit: int) -> Iterator[str]:
    """Cut a block at line boundaries into pieces of at most ``limit`` characters."""
    piece: list[str] = []
    size = 0
    for line in block.split("\n"):
        line = line[:limit]
        if size + len(line) + 1 > limit and piece:
            yield "\n".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line) + 1
    if piece:
        yield "\n".join(piece)


def pack(text: str, separator: str, limit: int = CODE_CHUNK_CHARS) -> Iterator[str]:
    """Chunks of ``text`` of at most ``limit`` characters, cut at ``separator`` where possible, else at
    line boundaries: no chunk of our own sources can break the intake's size limit."""
    blocks = [
        p for block in text.split(separator) for p in (_lines_within(block, limit) if len(block) > limit else [block])
    ]
    chunk: list[str] = []
    size = 0
    for block in blocks:
        if size + len(block) + len(separator) > limit and chunk:
            yield separator.join(chunk)
            chunk, size = [], 0
        chunk.append(block)
        size += len(block) + len(separator)
    if chunk:
        yield separator.join(chunk)


def _docstrings(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)))]
    return "\n\n".join(doc for n in nodes if (doc := ast.get_docstring(n)))


def stdlib_documents(max_files: int, seed: int) -> list[dict[str, Any]]:
    """Source chunks and docstring collections of the sampled stdlib modules, as raw intake rows."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rows: list[dict[str, Any]] = []
    for path in stdlib_files(max_files, seed):
        rel = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Kept as bytes so the intake rules quarantine it as invalid UTF-8 rather than silently dropping it.
            rows.append({"doc_id": f"stdlib:{rel}", "source": "python-stdlib", "text": raw})
            continue
        for i, chunk in enumerate(c for c in pack(source, "\n\n\n") if c.strip()):
            rows.append({"doc_id": f"stdlib:{rel}#{i}", "source": "python-stdlib", "text": chunk})
        for i, chunk in enumerate(c for c in pack(_docstrings(source), "\n\n") if c.strip()):
            rows.append({"doc_id": f"stdlib-doc:{rel}#{i}", "source": "python-stdlib-docstrings", "text": chunk})
    return rows


# Deeper than any sensible row (a document is one flat object): a fixed bound makes ``json_too_deep`` the
# same verdict wherever the stage runs, instead of depending on how much stack the parser has left.
MAX_JSON_DEPTH = 64
# Python's own default limit for int("...") (sys.int_info.default_max_str_digits), checked here so the rule
# does not depend on sys.set_int_max_str_digits or PYTHONINTMAXSTRDIGITS.
MAX_INT_DIGITS = 4300


class _NumberTooLarge(ValueError):
    pass


class _DuplicateKey(ValueError):
    pass


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLarge(f"integer with {len(digits.lstrip('-'))} digits (max {MAX_INT_DIGITS})")
    try:
        return int(digits)
    except ValueError as err:  # a stricter limit set for this interpreter
        raise _NumberTooLarge(str(err)) from err


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys; the earlier value would vanish unnoticed.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"key {key!r} appears twice")
        obj[key] = value
    return obj


def _nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), counted without recursion and
    only up to ``limit + 1``."""
    depth, level = 0, [value]
    while depth <= limit and (containers := [v for v in level if isinstance(v, (list, dict))]):
        depth += 1
        level = [child for v in containers for child in (v.values() if isinstance(v, dict) else v)]
    return depth


def _parse_line(line: bytes, origin: str) -> RawRow | UnreadableRow:
    """One JSONL line as a row, or the rule it breaks: never an exception, whatever the bytes."""
    try:
        obj = json.loads(line.decode("utf-8"), parse_int=_parse_int, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as err:
        return UnreadableRow(origin, "invalid_utf8", f"line is not UTF-8 ({err.reason} at byte {err.start})", line)
    except RecursionError:
        return UnreadableRow(origin, "json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels", line)
    except _NumberTooLarge as err:
        return UnreadableRow(origin, "number_too_large", str(err), line)
    except (json.JSONDecodeError, _DuplicateKey) as err:
        return UnreadableRow(origin, "invalid_json", str(err), line)
    if _nesting_depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return UnreadableRow(origin, "json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels", line)
    if not isinstance(obj, dict):
        return UnreadableRow(origin, "wrong_type", f"line is a JSON {type(obj).__name__}, expected an object", line)
    return RawRow(origin, obj)


def _read_jsonl(file: Path) -> list[RawRow | UnreadableRow]:
    # bytes.splitlines cuts at \n, \r and \r\n only; raw control characters inside a line stay in it.
    lines = file.read_bytes().removeprefix(codecs.BOM_UTF8).splitlines()
    return [_parse_line(line, f"{file.name}:line{n}") for n, line in enumerate(lines, start=1) if line.strip()]


@dataclass(frozen=True)
class UndecodableValue:
    """Stands for a nested parquet value (list, struct) holding strings that are not UTF-8: never a valid
    field, so its row is quarantined like any other of the wrong type."""

    arrow_type: str


def _scalar_value(scalar: pa.Scalar) -> Any:
    try:
        return scalar.as_py()
    except UnicodeDecodeError:
        return UndecodableValue(str(scalar.type))


def _is_string_type(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type)


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    """A parquet column as Python values, whatever its bytes: pyarrow aborts the whole read at the first
    string that is not UTF-8. Top-level strings are decoded here, invalid UTF-8 as lone surrogates (which
    the intake rules quarantine as ``invalid_utf8``)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if _is_string_type(column.type):
        raw = column.cast(pa.large_binary()).to_pylist()
        return [None if b is None else b.decode("utf-8", errors="surrogateescape") for b in raw]
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        # Strings nested in lists or structs: only the rows that hold invalid UTF-8 lose their value.
        return [_scalar_value(scalar) for scalar in column]


def _read_parquet(file: Path) -> list[RawRow]:
    try:
        table = pq.read_table(file)
    except pa.ArrowException as err:
        # Not a row's fault: there are no rows to quarantine in a file that is not parquet.
        raise ValueError(f"curate: extra documents file {file} is not readable parquet: {err}") from err
    # pandas stores a non-default index as a column; it is the writer's bookkeeping, not a field of the rows.
    index = [c for c in (table.schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)]
    table = table.drop_columns(index)
    columns = {name: _column_values(table.column(i)) for i, name in enumerate(table.column_names)}
    return [
        RawRow(f"{file.name}:row{i}", {name: values[i] for name, values in columns.items()})
        for i in range(table.num_rows)
    ]


def read_extra_documents(path: str) -> list[RawRow | UnreadableRow]:
    """User-supplied raw documents: JSONL (one object per line) or parquet, fields doc_id/source/text.

    Reading never fails on a row's content: a line that is not UTF-8, not JSON (a repeated key included),
    nested too deep, holds a too-large integer or is not an object becomes an ``UnreadableRow`` with its rule, every other row a
    ``RawRow`` with all its fields (unknown ones included, for the intake rules to judge), each named by
    file and line (JSONL, from 1; blank lines are not rows) or row (parquet, from 0).
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"curate: extra documents file {path} does not exist")
    return _read_parquet(file) if file.suffix == ".parquet" else _read_jsonl(file)
