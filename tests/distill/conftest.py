"""A tiny distillation world: curated prompts of two families (math for the instant teacher, tool_use for the
agentic one) with their tokenizer, a teacher checkpoint that has memorised a reference answer to each, and a
student checkpoint taken from the same training run much earlier (it knows the format, not the answers).
Laid out as the stages lay them out: ``<stage>/checkpoint`` with the tokenizer beside the weights."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from configs import resolve
from configs.data import EnvironmentsConfig
from corpus.env_data import prompt_frame
from corpus.tokenizer import EOS, PAD, save_tokenizer, train_tokenizer
from environments import all_environments
from model import Ling2ForCausalLM, export_hf

torch.set_num_threads(1)

FAMILIES = ("math", "tool_use")
TASKS_PER_FAMILY = 3
STUDENT_STEPS, TEACHER_STEPS = 8, 60
SHAPE = {"num_hidden_layers": 2, "num_experts": 8, "n_group": 2, "topk_group": 1, "num_nextn_predict_layers": 0}


def distill_config(vocab: int, **distill):
    overrides = {f"model.{k}": v for k, v in SHAPE.items()}
    overrides |= {
        "model.vocab_size": vocab,
        "curate.vocab_size": vocab,
        "environments.families": list(FAMILIES),
        "lineage.dvc": False,
        "distill.engine.backend": "torch",
        "distill.top_k": 4,
        "distill.sampling.prompts_per_family": TASKS_PER_FAMILY,
        "distill.sampling.samples_per_prompt": 2,
        "distill.sampling.max_new_tokens": 96,
        "distill.logit.steps": 30,
        "distill.logit.batch_size": 4,
        "distill.logit.lr": 2e-3,
        "distill.on_policy.steps": 2,
        "distill.on_policy.prompts_per_step": 2,
        "distill.on_policy.max_new_tokens": 32,
        "distill.eval.prompts_per_family": TASKS_PER_FAMILY,
        "distill.eval.max_new_tokens": 96,
    }
    return resolve("tiny_cpu", overrides | {f"distill.{k}": v for k, v in distill.items()})


def _export(model, tokenizer_dir: Path, folder: Path) -> Path:
    import shutil

    export_hf(model.eval(), folder / "checkpoint")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / name, folder / "checkpoint" / name)
    model.train()
    return folder


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    envs = all_environments(EnvironmentsConfig())
    tasks = [t for f in FAMILIES for t in envs[f].generate(TASKS_PER_FAMILY, seed=0, difficulty=1)]
    references = {t.task_id: envs[t.family].reference_responses(t, seed=0, n=2)[1].text for t in tasks}
    texts = [t.prompt + references[t.task_id] for t in tasks]
    tokenizer = train_tokenizer(texts * 20, vocab_size=400)
    curated = tmp_path_factory.mktemp("curate")
    save_tokenizer(tokenizer, curated / "tokenizer")
    prompt_frame(tasks).to_parquet(curated / "eval.parquet", index=False)
    prompt_frame(tasks).to_parquet(curated / "rl_prompts.parquet", index=False)
    prompt_frame(tasks).to_parquet(curated / "sft_prompts.parquet", index=False)

    cfg = distill_config(tokenizer.get_vocab_size())
    eos, pad = tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD)
    seqs = [[*tokenizer.encode(text).ids, eos] for text in texts]
    ids = torch.full((len(seqs), max(len(s) for s in seqs)), pad)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    labels = ids.masked_fill(ids == pad, -100)
    torch.manual_seed(0)
    model = Ling2ForCausalLM(dataclasses.replace(cfg.model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    student = None
    for step in range(1, TEACHER_STEPS + 1):
        loss = model(ids, attention_mask=(ids != pad).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == STUDENT_STEPS:
            student = _export(model, curated / "tokenizer", tmp_path_factory.mktemp("post_train"))
    teacher = _export(model, curated / "tokenizer", tmp_path_factory.mktemp("kpop_rl"))
    return SimpleNamespace(cfg=cfg, curated=curated, student=student, teacher=teacher, tasks=tasks, envs=envs)


@pytest.fixture(scope="session")
def distilled(world, tmp_path_factory):
    """One distillation: the memorising checkpoint teaches both families into the early student."""
    from training.distill.run import run_distill

    out_dir = tmp_path_factory.mktemp("distill")
    logged = []
    teachers = {"post_train": world.teacher, "kpop_rl": world.teacher}
    metrics = run_distill(
        world.cfg,
        world.curated,
        teachers,
        world.student,
        out_dir,
        on_log=lambda phase, step, m: logged.append((phase, step, dict(m))),
    )
    return SimpleNamespace(out_dir=out_dir, metrics=metrics, logged=logged)
