"""Raw text sources for the pre-training mix: the machine's own Python standard library, the task
environments' rendered examples, and optional user-supplied documents (JSONL or parquet)."""

from __future__ import annotations

import ast
import hashlib
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

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


def read_extra_documents(path: str) -> list[dict[str, Any]]:
    """User-supplied raw documents: JSONL (one object per line) or parquet, columns doc_id/source/text.

    Lines that are not valid UTF-8 or not JSON become rows whose ``text`` the intake rules reject, so a
    bad line is quarantined with its line number rather than aborting or vanishing.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"curate: extra documents file {path} does not exist")
    if file.suffix == ".parquet":
        return pd.read_parquet(file).to_dict("records")
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(file.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{file.name}:line{lineno}"
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            rows.append({"doc_id": origin, "source": file.name, "text": line, "origin": origin})
            continue
        except json.JSONDecodeError:
            rows.append({"doc_id": origin, "source": file.name, "text": None, "origin": origin})
            continue
        row = obj if isinstance(obj, dict) else {"doc_id": origin, "source": file.name, "text": obj}
        rows.append({**row, "origin": origin})
    return rows
