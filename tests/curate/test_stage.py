import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from corpus.curation import run_curation
from corpus.shards import read_shards
from data_contracts import (
    CandidateResponse,
    ContractViolation,
    PretrainDocument,
    PromptRow,
    QuarantineRow,
    SFTExample,
)

ROOT = Path(__file__).resolve().parents[2]


def test_outputs_satisfy_their_contracts(curated):
    out, report = curated
    PretrainDocument.validate(pd.read_parquet(out / "pretrain_documents.parquet"))
    PromptRow.validate(pd.read_parquet(out / "eval.parquet"))
    PromptRow.validate(pd.read_parquet(out / "rl_prompts.parquet"))
    SFTExample.validate(pd.read_parquet(out / "sft.parquet"))
    CandidateResponse.validate(pd.read_parquet(out / "candidates.parquet"))
    QuarantineRow.validate(pd.read_parquet(out / "quarantine.parquet"))
    assert all(s["success"] for s in report["suites"])
    assert len(read_shards(out / "shards", "train")) == report["tokens"]["train"] > 0
    assert len(read_shards(out / "shards", "heldout")) == report["tokens"]["heldout"] > 0
    assert json.loads((out / "contract_report.json").read_text()) == report


def test_rows_in_equals_kept_plus_quarantined(curated):
    out, report = curated
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    for table, t in report["tables"].items():
        assert t["rows_in"] == t["rows_kept"] + t["rows_quarantined"], table
        assert t["rows_quarantined"] == int((quarantine["table"] == table).sum()), table


def test_training_sets_do_not_contain_eval_prompts(curated):
    out, _ = curated
    norm = lambda s: " ".join(s.split()).lower()  # noqa: E731
    eval_prompts = set(pd.read_parquet(out / "eval.parquet")["prompt"].map(norm))
    for name in ("sft.parquet", "rl_prompts.parquet", "candidates.parquet"):
        assert not set(pd.read_parquet(out / name)["prompt"].map(norm)) & eval_prompts, name


def test_same_seed_and_config_give_byte_identical_shards_and_tokenizer(small_cfg, curated, tmp_path):
    first, _ = curated
    run_curation(small_cfg, tmp_path)
    for rel in ["tokenizer/tokenizer.json", "shards/index.json"]:
        assert (first / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    for shard in sorted((first / "shards").glob("*.bin")):
        assert shard.read_bytes() == (tmp_path / "shards" / shard.name).read_bytes(), shard.name


def _bad_input_file(path: Path, eval_frame: pd.DataFrame) -> dict[str, str]:
    """A JSONL of raw documents, one per rule; returns {row id: the rule it must be quarantined under}."""
    leaked = eval_frame.iloc[0]
    long_text = "lorem ipsum dolor sit amet " * 2000
    lines = [
        (
            json.dumps(
                {"doc_id": "ok-1", "source": "user", "text": "A perfectly normal document about rivers and lakes."}
            ),
            None,
        ),
        (json.dumps({"doc_id": "nan-text", "source": "user", "text": math.nan}), "null_field"),
        (json.dumps({"doc_id": "int-text", "source": "user", "text": 42}), "wrong_type"),
        (json.dumps({"doc_id": 7, "source": "user", "text": "an integer id is the wrong type here"}), "wrong_type"),
        (json.dumps({"doc_id": "blank", "source": "user", "text": "   \n  "}), "empty_text"),
        (b'{"doc_id": "bad-utf8", "source": "user", "text": "caf\xe9 au lait, not UTF-8 at all"}', "invalid_utf8"),
        (
            json.dumps({"doc_id": "ok-1", "source": "user", "text": "a second row reusing the id ok-1 here"}),
            "duplicate_id",
        ),
        (json.dumps({"doc_id": "huge", "source": "user", "text": long_text}), "oversize"),
        (
            json.dumps(
                {
                    "doc_id": "leak",
                    "source": "user",
                    "text": f"Worked solutions for practice: {leaked.prompt} {leaked.answer} and that is all.",
                }
            ),
            "eval_contamination",
        ),
    ]
    with path.open("wb") as fh:
        for line, _ in lines:
            fh.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    expected = {
        "nan-text": "null_field",
        "int-text": "wrong_type",
        "blank": "empty_text",
        "ok-1": "duplicate_id",
        "huge": "oversize",
        "leak": "eval_contamination",
    }
    expected[f"{path.name}:line4"] = "wrong_type"  # the integer doc_id: named by file and line
    expected[f"{path.name}:line6"] = "invalid_utf8"
    return expected


def test_bad_input_rows_are_quarantined_with_their_rule(small_cfg, curated, tmp_path):
    _, _ = curated
    eval_frame = pd.read_parquet(curated[0] / "eval.parquet")
    extra = tmp_path / "extra.jsonl"
    expected = _bad_input_file(extra, eval_frame)
    out = tmp_path / "out"
    report = run_curation(small_cfg, out, extra_documents=str(extra))
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    docs = quarantine[quarantine["table"] == "pretrain_documents"]
    found = dict(zip(docs["row_id"], docs["rule"], strict=True))
    for row_id, rule in expected.items():
        matches = {r for rid, r in found.items() if rid == row_id or rid.endswith(row_id)}
        assert rule in matches, (row_id, rule, matches)
    kept = pd.read_parquet(out / "pretrain_documents.parquet")
    assert "ok-1" in set(kept["doc_id"])
    table = report["tables"]["pretrain_documents"]
    assert table["rows_in"] == table["rows_kept"] + table["rows_quarantined"]


def test_raise_mode_stops_at_the_first_bad_row_naming_it(small_cfg, curated, tmp_path):
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"doc_id": "blank", "source": "user", "text": "  "}) + "\n")
    with pytest.raises(ContractViolation, match=r"pretrain_documents: row 'blank' breaks rule 'empty_text'"):
        run_curation(small_cfg, tmp_path / "out", extra_documents=str(extra), on_bad_rows="raise")


def test_bad_config_fails_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tasks", "curate", "--overrides", "curate.no_such_key=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown config key curate.no_such_key" in proc.stderr
    assert "generating environment tasks" not in proc.stderr
