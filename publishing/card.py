"""The model card (README.md): Hub metadata built with ``huggingface_hub``'s card classes, a body that links every
number back to its MLflow run, DVC data version and git commit.

The metadata is ``ModelCardData`` (license, tags, base_model, datasets, and a ``model-index`` made from
``EvalResult``s), the body a Jinja template rendered by ``ModelCard.from_template``; nothing is assembled by
string concatenation, so the YAML is always what the Hub's own parser reads back (``ModelCard.load``).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from configs.publish import PublishConfig
from publishing.gate import GateVerdict
from publishing.hf_folder import HfFolder
from publishing.provenance import EvalMetric, ReleaseLineage

CARD_NAME = "README.md"

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A {{ architecture }} checkpoint from the ling26-pipeline reproduction of the Ling-2.6 training recipe. The
architecture code ships with the weights: load it with `trust_remote_code=True`.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{{ repo_id }}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}", trust_remote_code=True)
```

## Evaluation

Evaluation gate: **{{ "passed" if eval_gate.passed else "failed" }}**{% if eval_gate.run_id %} (MLflow run `{{ eval_gate.run_id }}`){% endif %}.
{% for reason in eval_gate.reasons %}
- {{ reason }}
{%- endfor %}

| task | metric | value | dataset | split |
|---|---|---|---|---|
{% for m in eval_gate.metrics -%}
| {{ m.task }} | {{ m.metric }} | {{ "%.4g" | format(m.value) }} | {{ m.dataset }} | {{ m.split }} |
{% endfor %}
## Release gate

Evaluation passed, every data contract held, and the lineage below is complete.

- git work tree dirty: **{{ "yes" if lineage.dirty else "no" }}**{% if verdict.dirty_allowed %} (allowed by `allow_dirty`: this release cannot be rebuilt from the commit alone){% endif %}
{% if verdict.unversioned_allowed %}- stage outputs versioned by DVC: **no** (allowed by `allow_unversioned`: the data and checkpoints below cannot be fetched by hash)
{% endif %}
## Lineage

- MLflow tracking URI: `{{ lineage.tracking_uri }}`
- MLflow pipeline run: `{{ lineage.parent_run_id }}`; publishing run: `{{ publish_run_id }}`; registered model: `{{ registered_model }}`
- git commit: `{{ lineage.git_sha }}` (dirty: {{ lineage.git_dirty | lower }})
- Flyte execution: `{{ lineage.flyte_execution_id }}`

### Stage runs

| stage | MLflow run | git commit | dirty | Flyte execution | gates |
|---|---|---|---|---|---|
{% for s in lineage.stages -%}
| {{ s.stage }} | `{{ s.run_id }}` | `{{ s.git_sha[:12] }}` | {{ s.git_dirty | lower }} | `{{ s.flyte_execution_id }}` | {% for name, v in s.gates.items() %}{{ name }}={{ v }} {% endfor %}|
{% endfor %}
### Data and checkpoint versions (DVC)

| output | kind | stage | md5 |
|---|---|---|---|
{% for s in lineage.stages %}{% for path, md5 in s.outputs.items() -%}
| `{{ path }}` | {{ "dataset" if s.stage in dataset_stages else "checkpoint" }} | {{ s.stage }} | `{{ md5 }}` |
{% endfor %}{% endfor %}
### Data contracts

Every input row is kept or quarantined with the rule it broke; the pass rate is kept / in.

| stage | table | rows in | kept | quarantined | pass rate | quarantined by rule |
|---|---|---|---|---|---|---|
{% for t in lineage.contracts -%}
| {{ t.stage }} | {{ t.table }} | {{ t.rows_in }} | {{ t.rows_kept }} | {{ t.rows_quarantined }} | {{ "%.4f" | format(t.pass_rate) }} | {% for rule, n in t.quarantined_by_rule.items() %}{{ rule }}={{ n }} {% endfor %}|
{% endfor %}
{% for s in lineage.suites -%}
- great-expectations suite `{{ s.suite }}` ({{ s.stage }}): {{ "passed" if s.success else "failed" }}, {{ s.evaluated }} expectations{% for f in s.failed %}; failed: {{ f }}{% endfor %}
{% endfor %}
### Decontamination

{% for key, value in lineage.decontamination.items() -%}
- {{ key }}: {{ value }}
{% else -%}
No decontamination report was recorded.
{% endfor %}
### Training-inference mismatch

{% if lineage.mismatch -%}
{% for key, value in lineage.mismatch.items() -%}
- {{ key }}: {{ "%.6g" | format(value) }}
{% endfor %}
{%- else -%}
Not measured for this release.
{%- endif %}

## Weights

- sha256 over every tensor (name, dtype, shape, bytes): `{{ folder.weights_sha256 }}`
- {{ folder.weight_files | length }} safetensors file(s), {{ folder.tensor_bytes }} bytes of tensors: {% for f in folder.weight_files %}`{{ f }}` {% endfor %}
"""


def model_index_results(metrics: tuple[EvalMetric, ...]) -> list[EvalResult]:
    # The model-index groups results by (task type, dataset type, config, split, revision): the task family goes
    # into the dataset config, otherwise every family's numbers would merge into one entry under one task name.
    return [
        EvalResult(
            task_type="text-generation",
            task_name=m.task,
            dataset_type=m.dataset,
            dataset_name=m.dataset,
            dataset_config=m.task,
            dataset_split=m.split,
            metric_type=m.metric,
            metric_name=f"{m.task} {m.metric}",
            metric_value=m.value,
        )
        for m in metrics
    ]


def render_card(
    *,
    lineage: ReleaseLineage,
    verdict: GateVerdict,
    folder: HfFolder,
    config: PublishConfig,
    publish_run_id: str,
    registered_model: str,
) -> ModelCard:
    model_name = config.repo_id.split("/")[-1]
    datasets = [path for s in lineage.stages if s.stage in config.dataset_stages for path in s.outputs]
    data = ModelCardData(
        model_name=model_name,
        license=config.license,
        tags=list(config.tags),
        base_model=config.base_model,
        datasets=datasets or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        eval_results=model_index_results(lineage.eval_gate.metrics) or None,
    )
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        model_name=model_name,
        repo_id=config.repo_id,
        architecture=folder.architecture,
        eval_gate=lineage.eval_gate,
        verdict=verdict,
        lineage=lineage,
        dataset_stages=config.dataset_stages,
        publish_run_id=publish_run_id,
        registered_model=registered_model,
        folder=folder,
    )


def write_card(card: ModelCard, folder: Path) -> Path:
    path = folder / CARD_NAME
    card.save(path)
    return path
