"""Phase 1's data: the specialists answer the curated prompts of the families they serve, the environments'
verifiers keep the correct answers, and each kept sample gets the teacher's top-k log-probs at every
response position, the closing EOS included (a teacher forward pass over prompt + response) as a ``TeacherSample`` row.

Shape legend: B rows, T time, V vocabulary, K top-k.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from configs.distill import DistillConfig
from data_contracts.teacher_logprobs import TEACHER_DTYPES
from training.distill.batches import with_stop


@dataclass(frozen=True)
class Teacher:
    """A specialist: its stage name, the checkpoint folder it came from, and the loaded model."""

    name: str
    folder: Path
    model: torch.nn.Module


def load_teachers(
    teachers: Mapping[str, Path], routing: Mapping[str, str], base: Any = None
) -> tuple[dict[str, Teacher], dict[str, Teacher]]:
    """``({teacher name: Teacher}, {family: Teacher})`` for the teachers ``routing`` names; a folder handed
    in under two names is loaded once (until the KPop-RL stage exists, post_train's folder serves as both)."""
    from kernels.dispatch import place
    from model import load_checkpoint

    missing = sorted({name for name in routing.values() if name not in teachers})
    if missing:
        raise KeyError(
            f"distill.teachers routes families to {', '.join(missing)}, but no such teacher folder was given "
            f"(given: {', '.join(sorted(teachers)) or 'none'})"
        )
    by_folder: dict[Path, torch.nn.Module] = {}
    loaded: dict[str, Teacher] = {}
    for name in sorted(set(routing.values())):
        folder = (Path(teachers[name]) / "checkpoint").resolve()
        if folder not in by_folder:
            by_folder[folder] = place(load_checkpoint(folder, base=base)).eval().requires_grad_(False)
        loaded[name] = Teacher(name, folder, by_folder[folder])
    return loaded, {family: loaded[name] for family, name in routing.items()}


def prompt_pool(frame: pd.DataFrame, families: Sequence[str], per_family: int, seed: int) -> list[Any]:
    """``per_family`` tasks of each routed family drawn from one of curation's prompt tables, seeded."""
    from evals.tasks import tasks_from_frame

    tasks = []
    for family in families:
        rows = frame[frame["family"] == family]
        picked = random.Random(f"{seed}-{family}").sample(range(len(rows)), min(per_family, len(rows)))
        tasks += tasks_from_frame(rows.iloc[sorted(picked)])
    return tasks


@torch.no_grad()
def topk_at_responses(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    k: int,
    pad_id: int,
    *,
    batch_size: int = 16,
) -> list[tuple[list[int], list[float]]]:
    """Per row, the model's top-k ``(ids [R * K], log-probs [R * K])`` at each of its R response positions,
    position-major; log-probs at temperature 1, in fp32."""
    from training.post_train.common import response_batch

    out: list[tuple[list[int], list[float]]] = []
    for start in range(0, len(prompts), batch_size):
        p_rows, r_rows = prompts[start : start + batch_size], responses[start : start + batch_size]
        ids_BT, attn_BT, _ = response_batch(p_rows, r_rows, [[1] * len(r) for r in r_rows], pad_id)
        logits_BTV = model(ids_BT, attention_mask=attn_BT).logits[:, :-1].float()
        top_logp_BTK, top_ids_BTK = torch.log_softmax(logits_BTV, dim=-1).topk(k, dim=-1)
        for b, (p, r) in enumerate(zip(p_rows, r_rows, strict=True)):
            # Position len(p) - 1 predicts the first response token.
            span = slice(len(p) - 1, len(p) - 1 + len(r))
            out.append((top_ids_BTK[b, span].reshape(-1).tolist(), top_logp_BTK[b, span].reshape(-1).tolist()))
    return out


def sample_teacher(
    teacher: Teacher, tokenizer: Any, envs: Mapping[str, Any], tasks: Sequence[Any], cfg: DistillConfig, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(TeacherSample rows of the verified samples, one row per sample with family and verdict)``."""
    from corpus.tokenizer import EOS, PAD
    from inference.native import NativeEngine
    from inference.rollout import rollout
    from inference.sampling import SamplingParams

    s = cfg.sampling
    pad = tokenizer.token_to_id(PAD)
    engine = NativeEngine(teacher.model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=pad)
    grouped = [t for t in tasks for _ in range(s.samples_per_prompt)]
    params = SamplingParams(temperature=s.temperature, max_new_tokens=s.max_new_tokens, seed=seed)
    rolls = rollout(engine, envs, grouped, params, max_turns=s.max_tool_turns)
    verdicts = [envs[r.task.family].verify(r.task, r.text).correct for r in rolls]
    tried = pd.DataFrame(
        {
            "teacher": teacher.name,
            "family": [r.task.family for r in rolls],
            "correct": verdicts,
            "tokens": [r.model_tokens for r in rolls],
        }
    )
    # Only verified samples are worth a teacher forward pass: the rest never reach the table.
    kept = [r for r, ok in zip(rolls, verdicts, strict=True) if ok and r.response_ids]
    responses = [with_stop(r, engine.eos_id) for r in kept]
    topk = topk_at_responses(teacher.model, [r.prompt_ids for r in kept], [ids for ids, _ in responses], cfg.top_k, pad)
    rows = [
        {
            "sample_id": f"{teacher.name}/{r.task.task_id}#{i}",
            "prompt_id": r.task.task_id,
            "family": r.task.family,
            "teacher": teacher.name,
            "prompt_ids": list(r.prompt_ids),
            "response_ids": response,
            "response_mask": mask,
            "topk_ids": ids,
            "topk_logprobs": logp,
            "k": cfg.top_k,
            "correct": True,
            "n_tokens": sum(mask),
        }
        for i, (r, (response, mask), (ids, logp)) in enumerate(zip(kept, responses, topk, strict=True))
    ]
    return pd.DataFrame(rows, columns=list(TEACHER_DTYPES)), tried
