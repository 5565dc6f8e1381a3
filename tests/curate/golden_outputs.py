"""sha256 of every file curation writes, for the byte-identity tests of the fanned-out curation.

The golden file was recorded with the single-process curation that came before the fan-out (commit named in
the file); the in-process and the Flyte map_task paths must reproduce it byte for byte. Regenerate only
deliberately, when curation's outputs are meant to change, and say why in the commit:

    PYTHONPATH=$PWD .venv/bin/python tests/curate/golden_outputs.py --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

GOLDEN = Path(__file__).resolve().parent / "golden" / "curation_sha256.json"
ROOT = Path(__file__).resolve().parents[2]


def output_digests(out_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``out_dir``. ``config.json`` (the config itself) is left
    out and the report's ``config_hash`` blanked: other work adds config fields, which changes both without
    changing what curation did; the tests check those two against the config directly."""
    digests = {}
    for path in sorted(out_dir.rglob("*")):
        name = path.relative_to(out_dir).as_posix()
        if not path.is_file() or name == "config.json":
            continue
        data = path.read_bytes()
        if name == "contract_report.json":
            data = data.replace(json.loads(data)["config_hash"].encode(), b"<config_hash>")
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def bad_rows_file(path: Path, leaked: tuple[str, str]) -> Path:
    """User documents that exercise every rule the reduce side decides: rows without a usable id (named by
    file and line), duplicate ids within the user's file and against our own sources, an exact and a near
    duplicate, a document that leaks the eval item ``leaked`` (prompt, answer), and clean rows."""
    leak = json.dumps({"doc_id": "leak", "source": "user", "text": f"Worked solutions: {leaked[0]} {leaked[1]} done."})
    rows = [
        b'{"doc_id": "user-ok", "source": "user", "text": "A perfectly normal document about rivers and lakes."}',
        b'{"doc_id": "nan-text", "source": "user", "text": NaN}',
        b'{"doc_id": "int-text", "source": "user", "text": 42}',
        b'{"doc_id": 7, "source": "user", "text": "an integer id is the wrong type here"}',
        b'{"doc_id": "blank", "source": "user", "text": "   \\n  "}',
        b'{"doc_id": "bad-utf8", "source": "user", "text": "caf\xe9 au lait, not UTF-8 at all"}',
        b'{"doc_id": "user-ok", "source": "user", "text": "a second row reusing the id user-ok here"}',
        b'{"doc_id": "short", "source": "user", "text": "tiny"}',
        b'{"doc_id": "huge", "source": "user", "text": "' + b"lorem ipsum dolor sit amet " * 2000 + b'"}',
        b'{"doc_id": "user-copy", "source": "user", "text": "A perfectly   normal document about rivers and lakes."}',
        b'{"doc_id": "near-a", "source": "user", "text": "'
        + b"the quick brown fox jumps over the lazy dog " * 8
        + b'and then it rests"}',
        b'{"doc_id": "near-b", "source": "user", "text": "'
        + b"the quick brown fox jumps over the lazy dog " * 8
        + b'and then it sleeps"}',
        b'{"doc_id": "extra", "source": "user", "text": "x", "lang": "en"}',
        b'{"doc_id": "stdlib:tkinter/ttk.py#0", "source": "user", "text": "an id our own sources already use here"}',
        leak.encode(),
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def record() -> dict:
    from configs import resolve
    from corpus.curation import run_curation
    from tests.curate.conftest import SMALL

    cfg = resolve("tiny_cpu", SMALL)
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_curation(cfg, Path(tmp) / "plain")
        cases["plain"] = output_digests(Path(tmp) / "plain")
        eval_item = pd.read_parquet(Path(tmp) / "plain" / "eval.parquet").iloc[0]
        extra = bad_rows_file(Path(tmp) / "extra.jsonl", (eval_item["prompt"], eval_item["answer"]))
        run_curation(cfg, Path(tmp) / "extra", extra_documents=str(extra))
        cases["extra"] = output_digests(Path(tmp) / "extra")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "about": "sha256 of curation's outputs on tests/curate/conftest.py's SMALL world; see golden_outputs.py",
        "recorded_at_commit": commit,
        "cases": cases,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN.relative_to(ROOT)}")
    args = parser.parse_args()
    golden = record()
    text = json.dumps(golden, indent=2, sort_keys=True) + "\n"
    if args.write:
        GOLDEN.write_text(text)
    print(text)
