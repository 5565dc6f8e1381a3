"""Fanned-out curation writes what single-process curation wrote, byte for byte (golden hashes recorded
before the fan-out, ``golden_outputs.py``), whatever the shard size and however the map runs: in this
process (the stage CLI, ``dvc repro``) or as Flyte ``map_task``s inside the curation sub-workflow."""

import json

import pandas as pd
import pytest
from golden_outputs import GOLDEN, bad_rows_file, output_digests

from configs import config_hash, to_dict
from corpus.curation import run_curation

CASES = json.loads(GOLDEN.read_text())["cases"]


def _assert_golden(out_dir, case, cfg, *, stage_files=()):
    """``stage_files``: what the stage body writes after curation proper (the haystacks), not in the golden."""
    got, want = output_digests(out_dir), CASES[case]
    assert sorted(got) == sorted([*want, *stage_files])
    got = {f: got[f] for f in want}
    assert {f: h for f, h in got.items() if want[f] != h} == {}
    assert json.loads((out_dir / "config.json").read_text()) == to_dict(cfg)
    assert json.loads((out_dir / "contract_report.json").read_text())["config_hash"] == config_hash(cfg)


def test_in_process_curation_is_byte_identical_to_the_single_loop(small_cfg, curated):
    out, _ = curated
    _assert_golden(out, "plain", small_cfg)


@pytest.mark.parametrize("docs_per_shard", [37])
def test_every_rule_decided_across_shards_is_byte_identical(small_cfg, curated, tmp_path, docs_per_shard):
    """Uneven shards put a duplicate id, an exact and a near duplicate in other shards than their first."""
    eval_item = pd.read_parquet(curated[0] / "eval.parquet").iloc[0]
    extra = bad_rows_file(tmp_path / "extra.jsonl", (eval_item["prompt"], eval_item["answer"]))
    run_curation(small_cfg, tmp_path / "out", extra_documents=str(extra), docs_per_shard=docs_per_shard)
    _assert_golden(tmp_path / "out", "extra", small_cfg)


@pytest.fixture()
def private_flyte_cache(tmp_path, monkeypatch):
    """Flyte's local cache in a fresh folder: a cache entry of an earlier session must not answer this one."""
    from diskcache import Cache
    from flytekit.core.local_cache import LocalTaskCache

    monkeypatch.setattr(LocalTaskCache, "_cache", Cache(str(tmp_path / "flyte-cache")), raising=False)
    monkeypatch.setattr(LocalTaskCache, "_initialized", True)


@pytest.fixture()
def phase_calls(monkeypatch):
    """How often each curation phase ran (the Flyte tasks import them from ``corpus.curation`` when they run)."""
    import corpus.curation as curation

    calls = {}
    for name in ("prepare", "analyse_shard", "decide", "tokenize_shard", "finish"):
        real = getattr(curation, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(curation, name, counted)
    return calls


def test_flyte_map_tasks_are_byte_identical_and_cached(private_flyte_cache, phase_calls):
    """The sub-workflow run by flytekit's local executor: the maps run once per shard, the outputs equal the
    golden, and a second execution is served from Flyte's cache without running any phase."""
    from pathlib import Path

    from configs import resolve
    from tasks.common import dump_config
    from tests.curate.conftest import SMALL
    from workflows.curation import curation

    # No DVC here: the stage would version its outputs into the repository's DVC cache.
    cfg = resolve("tiny_cpu", {**SMALL, "lineage.dvc": False})
    docs = 120
    first = curation(config_json=dump_config(cfg), parent_run_id="", docs_per_shard=docs)
    from corpus.haystack import HAYSTACK_FILE, QUARANTINE_FILE

    _assert_golden(Path(first.out.path), "plain", cfg, stage_files=(HAYSTACK_FILE, QUARANTINE_FILE))
    report = json.loads((Path(first.out.path) / "contract_report.json").read_text())
    rows_in = report["tables"]["pretrain_documents"]["rows_in"]
    kept = report["tables"]["pretrain_documents"]["rows_kept"]
    assert phase_calls == {
        "prepare": 1,
        "analyse_shard": -(-rows_in // docs),
        "decide": 1,
        "tokenize_shard": -(-kept // docs),
        "finish": 1,
    }
    assert phase_calls["analyse_shard"] > 1 and phase_calls["tokenize_shard"] > 1

    phase_calls.clear()
    second = curation(config_json=dump_config(cfg), parent_run_id="another-run", docs_per_shard=docs)
    assert phase_calls == {}
    assert second.report_json == first.report_json


def test_the_workflow_default_shard_size_is_the_library_one():
    from corpus.shard_work import DOCS_PER_SHARD
    from workflows import curation

    assert curation.DOCS_PER_SHARD == DOCS_PER_SHARD


def _records_equal(a, b):
    return (
        a.intake == b.intake
        and a.rejected == b.rejected
        and a.doc == b.doc
        and a.exact_key == b.exact_key
        and (a.signature is None) == (b.signature is None)
        and (a.signature is None or (a.signature == b.signature).all())
        and a.shared_ngram == b.shared_ngram
    )


def test_a_documents_record_does_not_depend_on_its_shard():
    from corpus.decontaminate import EvalIndex
    from corpus.shard_work import IntakeItem, analyse_rows
    from data_contracts.quarantine import RawRow

    index = EvalIndex.build([("what is the capital of peru", "lima is the capital of peru")], n=4, template_min_items=2)
    rows = [
        {"doc_id": "a", "source": "stdlib", "text": "notes: what is the capital of peru? lima."},
        {"doc_id": "b", "source": "env-math", "text": "what is the capital of peru lima is the capital"},
        RawRow("f.jsonl:line1", {"doc_id": None, "source": "user", "text": "no id here"}),
        {"doc_id": "c", "source": "stdlib", "text": "an unrelated   document about rivers"},
        RawRow("f.jsonl:line2", {"doc_id": "d", "source": "user", "text": b"caf\xe9"}),
    ]
    items = [IntakeItem(int(isinstance(r, RawRow)), i, r) for i, r in enumerate(rows)]
    kwargs = {"index": index, "shingle": 5, "permutations": 16, "seed": 3}
    whole = analyse_rows(items, **kwargs)
    for cut in range(len(items) + 1):
        pieces = analyse_rows(items[:cut], **kwargs) + analyse_rows(items[cut:], **kwargs)
        assert all(_records_equal(x, y) for x, y in zip(whole, pieces, strict=True)), cut
    assert [r.rejected.rule if r.rejected else None for r in whole] == [None, None, "null_field", None, "invalid_utf8"]
    assert whole[0].shared_ngram == ("what", "is", "the", "capital")
    assert whole[1].shared_ngram is None  # environment text: checked where it is generated
    assert whole[3].shared_ngram is None


def test_raise_mode_stops_at_the_first_bad_user_row_across_shards(small_cfg, tmp_path):
    """The duplicate id (a reduce-side rule) comes before the blank row (a map-side rule), in another shard."""
    from data_contracts import ContractViolation

    extra = tmp_path / "extra.jsonl"
    rows = [
        {"doc_id": "u1", "source": "user", "text": "a first ordinary user document, long enough to keep"},
        {"doc_id": "u1", "source": "user", "text": "a second row that reuses the id u1, long enough"},
        {"doc_id": "blank", "source": "user", "text": "   "},
    ]
    extra.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ContractViolation, match=r"row 'u1' breaks rule 'duplicate_id'"):
        run_curation(small_cfg, tmp_path / "out", extra_documents=str(extra), on_bad_rows="raise", docs_per_shard=1)
