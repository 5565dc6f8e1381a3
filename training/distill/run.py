"""The distillation stage as a plain function: the specialists (the KPop-RL agentic model for the tool
families, the instant model of post_train for the rest; ``distill.teachers`` routes) are distilled into one
instant model that starts from post_train's checkpoint (METHODS §6: specialists -> unified).

1. the teachers answer the curated prompts of their families; verified answers, with the teacher's top-k
   log-probs per token, form the contracted ``teacher_samples`` table; logit distillation on it;
2. on-policy distillation: the student samples, each family's teacher scores the student's tokens.

The student is evaluated before and after, the teachers once each, all greedy on the same eval prompts.

Outputs under ``out_dir``:
  checkpoint/                the distilled student, official layout + tokenizer (``evals.compare.load_engine``)
  eval_summary.parquet       EvalResult rows of student_before, each teacher_<name>, student_after
  comparison.parquet         per family: accuracy and tokens per correct answer, before / after / teacher
  teacher_samples.parquet    the kept TeacherSample rows
  quarantine.parquet         teacher samples that broke their contract, with the rule
  metrics.json               the flat metrics ``run_distill`` returns
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from configs import PipelineConfig
from data_contracts import IntakeResult, QuarantineLedger, require_kept, screen_teacher_samples
from training.post_train.contracts import contract_counts, write_quarantine

logger = logging.getLogger(__name__)
OnLog = Callable[[str, int, Mapping[str, float]], None]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SAMPLES_REMEDY = (
    "See table 'teacher_samples' in data/distill/quarantine.parquet for the rule each sample broke. Long "
    "samples need a larger distill.max_sample_tokens; a top-k or shape rule means the teacher scoring is broken."
)


def run_distill(
    cfg: PipelineConfig,
    curated: Path,
    teachers: Mapping[str, Path],
    student: Path,
    out_dir: Path,
    *,
    on_log: OnLog | None = None,
) -> dict[str, Any]:
    """Distil ``teachers`` (stage name -> output folder holding ``checkpoint/``) into the ``student``
    stage's checkpoint; write ``out_dir`` (module docstring). Returns flat float metrics plus "contracts"."""
    from training.builder import require_in_place_training

    require_in_place_training(cfg.distill.engine, "distill")
    from corpus.tokenizer import PAD, load_tokenizer
    from environments import all_environments
    from evals.tasks import eval_tasks
    from kernels.dispatch import place
    from model import export_checkpoint, load_checkpoint
    from training.distill.phases import logit_phase, on_policy_phase
    from training.distill.report import STUDENT_AFTER, comparison_metrics, family_comparison
    from training.distill.teachers import load_teachers, prompt_pool

    d = cfg.distill
    torch.manual_seed(cfg.seed)
    metrics: dict[str, Any] = {}

    def log(phase: str, step: int, values: Mapping[str, float]) -> None:
        shown = {k: round(v, 4) for k, v in values.items() if "." not in k or k.endswith(".all.accuracy")}
        logger.info("%s %d %s", phase, step, shown)
        # Evaluation keys arrive fully named (eval.<checkpoint>.<family>.<metric>); a phase's are its own.
        metrics.update({(k if phase == "eval" else f"{phase}.{k}"): float(v) for k, v in values.items()})
        if on_log is not None:
            on_log(phase, step, values)

    envs = all_environments(cfg.environments)
    tokenizer = load_tokenizer(curated / "tokenizer")
    student_folder = (Path(student) / "checkpoint").resolve()
    model = place(load_checkpoint(student_folder, base=cfg.model))  # the one device decision
    routing = {f: t for f, t in sorted(d.teachers.items()) if f in cfg.environments.families}
    by_name, teacher_of = load_teachers(teachers, routing, base=cfg.model)
    prompts = pd.read_parquet(curated / f"{d.sampling.prompt_table}.parquet")
    pool = prompt_pool(prompts, list(routing), d.sampling.prompts_per_family, cfg.seed)

    # The teacher table first: a broken one fails the stage before any evaluation or training.
    samples, sampling = teacher_table(by_name, routing, pool, tokenizer, envs, cfg, model.config.vocab_size, out_dir)
    metrics.update(sampling)
    samples.kept.to_parquet(out_dir / "teacher_samples.parquet", index=False)

    eval_set = eval_tasks(curated, d.eval.prompts_per_family)
    summaries = evaluate_before(model, student_folder, by_name, tokenizer, envs, eval_set, cfg, log)
    if len(samples.kept) and d.logit.steps:
        logit_phase(model, samples.kept, tokenizer.token_to_id(PAD), d, cfg.seed, log)
    if d.on_policy.steps:
        on_policy_phase(model, tokenizer, envs, pool, teacher_of, d, cfg.seed + 1, log)
    model.eval()
    summaries.append(_evaluate(model, tokenizer, envs, eval_set, cfg, STUDENT_AFTER, log, step=1))

    table = pd.concat(summaries, ignore_index=True)
    table.to_parquet(out_dir / "eval_summary.parquet", index=False)
    comparison = family_comparison(table, routing)
    comparison.to_parquet(out_dir / "comparison.parquet", index=False)
    metrics.update(comparison_metrics(comparison, table))
    checkpoint = out_dir / "checkpoint"
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    export_checkpoint(model, checkpoint)
    for name in TOKENIZER_FILES:
        shutil.copy(curated / "tokenizer" / name, checkpoint / name)
    metrics["contracts"] = contract_counts([samples])
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return metrics


def teacher_table(
    by_name: Mapping[str, Any],
    routing: Mapping[str, str],
    pool: Sequence[Any],
    tokenizer: Any,
    envs: Mapping[str, Any],
    cfg: PipelineConfig,
    vocab_size: int,
    out_dir: Path,
) -> tuple[IntakeResult, dict[str, float]]:
    """Each teacher samples its families' prompts; the verified samples, screened by their contract, and
    the pass rate per (teacher, family). ``quarantine.parquet`` is written however this ends."""
    from training.distill.teachers import sample_teacher

    ledger = QuarantineLedger()
    stats: dict[str, float] = {}
    try:
        frames, tried = [], []
        for i, (name, teacher) in enumerate(sorted(by_name.items())):
            tasks = [t for t in pool if routing[t.family] == name]
            rows, attempts = sample_teacher(teacher, tokenizer, envs, tasks, cfg.distill, seed=cfg.seed + 100 * i)
            frames.append(rows)
            tried.append(attempts)
        for (name, family), g in pd.concat(tried, ignore_index=True).groupby(["teacher", "family"], sort=True):
            stats[f"sampling.{name}.{family}.pass_rate"] = float(g["correct"].mean())
            stats[f"sampling.{name}.{family}.samples"] = float(len(g))
        samples = screen_teacher_samples(
            pd.concat(frames, ignore_index=True),
            ledger,
            top_k=cfg.distill.top_k,
            vocab_size=vocab_size,
            max_tokens=cfg.distill.max_sample_tokens,
        )
        # No verified sample at all is a training outcome (weak teachers): phase 1 is skipped. Samples that
        # all broke their contract are a broken table: stop.
        if samples.rows_in:
            require_kept(samples, remedy=SAMPLES_REMEDY)
    finally:
        write_quarantine(ledger, out_dir)
    stats["sampling.kept"] = float(len(samples.kept))
    return samples, stats


def _evaluate(
    model, tokenizer, envs, eval_set, cfg: PipelineConfig, label: str, log: OnLog, *, step: int = 0
) -> pd.DataFrame:
    """Greedy ``EvalResult`` rows of ``model`` labelled ``label``, logged as ``eval`` (0 before, 1 after)."""
    from training.distill.report import evaluate_model
    from training.post_train.common import eval_metrics

    summary = evaluate_model(model, tokenizer, envs, eval_set, cfg.distill, label)
    log("eval", step, eval_metrics(summary, f"eval.{label}"))
    return summary


def evaluate_before(
    model, student_folder: Path, by_name: Mapping[str, Any], tokenizer, envs, eval_set, cfg: PipelineConfig, log
) -> list[pd.DataFrame]:
    """EvalResult tables of the student before training and of every teacher. A teacher that is the
    student's own checkpoint (or another teacher's) is not evaluated twice: its rows are relabelled copies."""
    from training.distill.report import STUDENT_BEFORE, teacher_label
    from training.post_train.common import eval_metrics

    summaries = [_evaluate(model, tokenizer, envs, eval_set, cfg, STUDENT_BEFORE, log)]
    evaluated: dict[Path, pd.DataFrame] = {student_folder: summaries[0]}
    for name, teacher in sorted(by_name.items()):
        label = teacher_label(name)
        if teacher.folder in evaluated:
            summary = evaluated[teacher.folder].assign(checkpoint=label)
            log("eval", 0, eval_metrics(summary, f"eval.{label}"))
        else:
            summary = evaluated[teacher.folder] = _evaluate(teacher.model, tokenizer, envs, eval_set, cfg, label, log)
        summaries.append(summary)
    return summaries
