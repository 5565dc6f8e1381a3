"""The model card: Hub metadata that round-trips through huggingface_hub's own parser, and a body that links every
number back to its run, data version and commit."""

import dataclasses
from pathlib import Path

from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from publishing import GateVerdict, HfFolder
from publishing.card import render_card, write_card

FOLDER = HfFolder(
    path=Path("unused"),
    architecture="BailingMoeV2_5ForCausalLM",
    weight_files=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
    tensor_bytes=7_272_128,
    weights_sha256="f" * 64,
)
PASSED = GateVerdict(passed=True, reasons=(), dirty_allowed=False)


def saved_card(tmp_path, lineage, config, verdict=PASSED) -> ModelCard:
    card = render_card(
        lineage=lineage,
        verdict=verdict,
        folder=FOLDER,
        config=config,
        publish_run_id="publish-run-7",
        registered_model="ling26-tiny",
    )
    tmp_path.mkdir(exist_ok=True)
    return ModelCard.load(write_card(card, tmp_path))


def test_metadata_round_trips_through_the_hub_parser(tmp_path, lineage, config):
    card = saved_card(tmp_path, lineage, config)
    data = card.data
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert data.tags == list(config.tags)
    assert data.base_model == "inclusionAI/Ling-mini-2.0"
    assert data.datasets == ["data/curate", "data/evaluate"]
    assert data.model_name == "ling26-tiny"
    got = {(r.task_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert got == {(m.task, m.metric): m.value for m in lineage.eval_gate.metrics}
    # The model-index keeps one entry per task family, each under its own task name.
    _, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert {r.task_name for r in results} == {"math", "code"}
    assert all(r.dataset_type == "ling26/eval" and r.dataset_split == "eval" for r in results)


def test_optional_metadata_is_left_out(tmp_path, lineage, config):
    card = saved_card(tmp_path, lineage, dataclasses.replace(config, base_model=None))
    assert "base_model" not in card.data.to_dict()


def test_body_links_back_to_every_run_data_version_and_commit(tmp_path, lineage, config):
    text = saved_card(tmp_path, lineage, config).text
    for needle in (
        lineage.tracking_uri,
        lineage.parent_run_id,
        "publish-run-7",
        lineage.git_sha,
        lineage.flyte_execution_id,
        "parity_gate=passed",
        "ling26-tiny",
        FOLDER.weights_sha256,
        *FOLDER.weight_files,
        "Evaluation gate: **passed**",
        "git work tree dirty: **no**",
        "| curate | sft | 120 | 117 | 3 | 0.9750 | response_too_long=2 bad_family=1 |",
        "| post_train | pairs | 40 | 40 | 0 | 1.0000 |",
        "ling26.sft` (curate): passed, 9 expectations",
        "eval_content_ngrams: 1234",
        "mean_abs_logprob_gap: 1.5e-05",
    ):
        assert needle in text, needle
    for stage in lineage.stages:
        assert stage.run_id in text, stage.stage
        for path, md5 in stage.outputs.items():
            kind = "dataset" if stage.stage in config.dataset_stages else "checkpoint"
            assert f"| `{path}` | {kind} | {stage.stage} | `{md5}` |" in text


def test_dirty_release_allowed_by_flag_is_recorded(tmp_path, lineage, config):
    dirty = dataclasses.replace(lineage, git_dirty=True)
    verdict = GateVerdict(passed=True, reasons=(), dirty_allowed=True)
    text = saved_card(tmp_path, dirty, config, verdict).text
    assert "git work tree dirty: **yes** (allowed by `allow_dirty`" in text


def test_missing_mismatch_and_decontamination_are_stated(tmp_path, lineage, config):
    bare = dataclasses.replace(lineage, mismatch=None, decontamination={})
    text = saved_card(tmp_path, bare, config).text
    assert "Not measured for this release." in text
    assert "No decontamination report was recorded." in text
