"""lm-evaluation-harness on our checkpoints: public tasks (GSM8K, MMLU, ...) at scale, and our own held-out
set as a local task that needs no download.

An exported checkpoint folder (model, modeling files, tokenizer) loads through lm_eval's Hugging Face class
(``HFLM(pretrained=<folder>, trust_remote_code=True)``), i.e. ``AutoModelForCausalLM`` running our code.
The local task comes in two parts, one per request type of lm_eval:

  <name>_gen  generate_until on the families without tools (a plain generation cannot call a tool): the
              last ``Answer:`` value of the response against the task's answer, exact string match
              (stricter than our verifiers, which compare numbers by value and run code)
  <name>_ll   loglikelihood of the shortest correct reference response given the prompt, every family
              (tool results inside a reference count as text here: lm_eval has no environment; lm_eval also
              moves the prompt's trailing newline into the continuation, so that token counts too)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

LOCAL_TASK = "ling26_heldout"
# Stop a generation at a blank line, or where the model starts a tool call the plain generation cannot serve.
STOP = ("\n\n", "<call>")


def _reference(env, task, seed: int) -> str:
    """The shortest correct reference response: what post-training teaches the model to write."""
    candidates = env.reference_responses(task, seed=seed, n=2)
    return min((c.text for c in candidates if c.correct), key=len)


def write_local_task(
    tasks: Sequence[Any],
    envs: Mapping[str, Any],
    folder: str | Path,
    *,
    name: str = LOCAL_TASK,
    max_gen_toks: int = 96,
    seed: int = 0,
) -> list[str]:
    """Write the held-out ``tasks`` as lm_eval task YAMLs + a jsonl dataset under ``folder`` (see the module
    docstring); returns the task names, for ``run_lm_eval(..., include_path=folder)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        {
            "prompt_id": t.task_id,
            "family": t.family,
            "prompt": t.prompt,
            "answer": t.answer,
            "reference": _reference(envs[t.family], t, seed),
            "tools": bool(envs[t.family].tool_names),
        }
        for t in tasks
    ]
    data = {"ll": docs, "gen": [d for d in docs if not d["tools"]]}
    common = {
        "dataset_path": "json",
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        # Our prompts end with a newline; lm_eval's default " " between context and target would be a new token.
        "target_delimiter": "",
        "metadata": {"version": 1},
    }
    specs = {
        "gen": {
            "output_type": "generate_until",
            "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": list(STOP), "max_gen_toks": max_gen_toks, "do_sample": False},
            "filter_list": [
                {
                    "name": "answer",
                    "filter": [
                        {"function": "regex", "regex_pattern": r"Answer:[ \t]*(.*\S)", "group_select": -1},
                        {"function": "take_first"},
                    ],
                }
            ],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        },
        "ll": {
            "output_type": "loglikelihood",
            "doc_to_target": "{{reference}}",
            "metric_list": [
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            ],
        },
    }
    names = []
    for part, spec in specs.items():
        if not data[part]:
            continue
        rows = folder / f"{name}_{part}.jsonl"
        rows.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in data[part]))
        task = {
            "task": f"{name}_{part}",
            **common,
            # The datasets cache stays beside the data, out of the user's ~/.cache.
            "dataset_kwargs": {"data_files": {"test": str(rows)}, "cache_dir": str(folder / "hf_datasets_cache")},
            **spec,
        }
        (folder / f"{name}_{part}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        names.append(f"{name}_{part}")
    return names


def _task_manager(tasks: Sequence[str], include_path: str | Path | None):
    """Index only ``include_path`` when it holds every task asked for (fast); else lm_eval's own tasks too."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if set(tasks) <= set(local.all_tasks):
            return local
    manager = TaskManager(include_path=None if include_path is None else str(include_path))
    unknown = sorted(set(tasks) - set(manager.all_tasks))
    if unknown:
        raise ValueError(f"lm_eval knows no task {unknown[0]!r}: check the name (lm_eval ls tasks) or include_path")
    return manager


def lm_eval_results(
    checkpoint_dir: str | Path,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    seed: int = 0,
    log_samples: bool = False,
) -> dict[str, Any]:
    """lm_eval's own result dict (``results``, and ``samples`` with ``log_samples``) for ``tasks`` on the
    checkpoint folder."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from evals.compare import checkpoint_folder

    folder = checkpoint_folder(checkpoint_dir)
    if not tasks:
        raise ValueError("no lm_eval tasks given")
    manager = _task_manager(tasks, include_path)
    model = HFLM(pretrained=str(folder), trust_remote_code=True, device=device, batch_size=batch_size)
    # An exported folder names no eos_token_id (config.json or generation_config.json), so generate() would run
    # rows past their end-of-sequence token; lm_eval then drops that token when decoding and keeps what follows.
    model.model.generation_config.eos_token_id = model.tokenizer.eos_token_id
    return lm_eval.simple_evaluate(
        model=model,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=log_samples,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        # The standard errors are bootstrapped for some metrics; 1000 resamples keep a small run fast.
        bootstrap_iters=1000,
    )


def metrics_from(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """task -> {metric: value} from lm_eval's result dict; lm_eval's ``metric,filter`` keys become
    ``metric`` (no filter) or ``metric:filter``, standard errors kept as ``<metric>_stderr``."""
    out: dict[str, dict[str, float]] = {}
    for task, values in results["results"].items():
        metrics = {}
        for key, value in values.items():
            if "," not in key or not isinstance(value, int | float):
                continue
            metric, filter_name = key.split(",", 1)
            metrics[metric if filter_name == "none" else f"{metric}:{filter_name}"] = float(value)
        out[task] = metrics
    return out


def run_lm_eval(
    checkpoint_dir: str | Path,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """task -> {metric: value} for lm_eval ``tasks`` (public names, or local ones under ``include_path``)."""
    return metrics_from(
        lm_eval_results(
            checkpoint_dir,
            tasks,
            limit=limit,
            include_path=include_path,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            device=device,
            seed=seed,
        )
    )


def lm_eval_rows(checkpoint: str, metrics: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """``ComparisonRow`` rows (family "all", metric ``lm_eval.<task>.<metric>``) of ``run_lm_eval``'s output;
    standard errors left out. ``n`` is 0: lm_eval reports the values, not what they average."""
    return [
        {"checkpoint": checkpoint, "family": "all", "metric": f"lm_eval.{task}.{metric}", "value": value, "n": 0}
        for task, values in sorted(metrics.items())
        for metric, value in sorted(values.items())
        if not metric.endswith("_stderr") and "_stderr:" not in metric
    ]
