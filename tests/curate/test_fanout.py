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


def _assert_golden(out_dir, case, cfg):
    got, want = output_digests(out_dir), CASES[case]
    assert sorted(got) == sorted(want)
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
