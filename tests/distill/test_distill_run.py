"""``run_distill`` end to end on the tiny world (conftest): what it writes, that the student moved towards its
teacher, the contract on the teacher table, and self-distillation as the fixed point of both losses."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from data_contracts import NoRowsLeft, TeacherSample
from training.distill.batches import teacher_batch
from training.objectives.distill_kl import topk_forward_kl


def bucketed_kl(folder, samples: pd.DataFrame, pad: int, k: int) -> float:
    """Mean top-k forward KL of the teacher's recorded log-probs to the checkpoint in ``folder``."""
    from model import load_checkpoint

    model = load_checkpoint(folder / "checkpoint").eval()
    ids, attn, target, top_ids, top_logp = teacher_batch(samples.to_dict("records"), pad, k)
    with torch.no_grad():
        _, stats = topk_forward_kl(model(ids, attention_mask=attn).logits[:, :-1], top_ids, top_logp, target)
    return float(stats["kl"])


def test_outputs_are_written_and_the_checkpoint_loads_with_the_evaluation_engine(distilled):
    from evals.compare import load_engine
    from inference.sampling import SamplingParams

    out = distilled.out_dir
    for name in ("eval_summary.parquet", "comparison.parquet", "teacher_samples.parquet", "quarantine.parquet"):
        assert (out / name).exists(), name
    engine = load_engine(out / "checkpoint")
    (gen,) = engine.generate(["What is 2 + 3?"], SamplingParams(temperature=0.0, max_new_tokens=4))
    assert len(gen.token_ids) >= 1
    assert (out / "metrics.json").exists()


def test_the_teacher_table_is_contracted_routed_and_counted(world, distilled):
    samples = pd.read_parquet(distilled.out_dir / "teacher_samples.parquet")
    TeacherSample.validate(samples)
    assert len(samples) >= 2
    # Routing: the instant teacher answered math, the agentic teacher the tool family.
    assert set(samples.loc[samples["family"] == "math", "teacher"]) <= {"post_train"}
    assert set(samples.loc[samples["family"] == "tool_use", "teacher"]) <= {"kpop_rl"}
    counts = distilled.metrics["contracts"]["teacher_samples"]
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_quarantined"]
    assert counts["rows_kept"] == len(samples) == distilled.metrics["sampling.kept"]
    assert pd.read_parquet(distilled.out_dir / "quarantine.parquet").empty
    # The memorising teacher passes its own verifier on most samples.
    assert distilled.metrics["sampling.post_train.math.pass_rate"] > 0.5


def test_logit_distillation_moves_the_student_towards_the_teacher(world, distilled):
    from corpus.tokenizer import PAD, load_tokenizer

    samples = pd.read_parquet(distilled.out_dir / "teacher_samples.parquet")
    pad = load_tokenizer(world.curated / "tokenizer").token_to_id(PAD)
    k = world.cfg.distill.top_k
    before = bucketed_kl(world.student, samples, pad, k)
    after = bucketed_kl(distilled.out_dir, samples, pad, k)
    teacher = bucketed_kl(world.teacher, samples, pad, k)
    assert teacher == pytest.approx(0.0, abs=1e-4)  # the recorded log-probs are the teacher's own
    assert after < 0.5 * before, (before, after)
    kls = [m["kl"] for phase, _, m in distilled.logged if phase == "logit"]
    assert kls[-1] < kls[0]


def test_report_has_before_after_and_teacher_for_every_family(distilled):
    metrics, summary = distilled.metrics, pd.read_parquet(distilled.out_dir / "eval_summary.parquet")
    assert set(summary["checkpoint"]) == {"student_before", "teacher_kpop_rl", "teacher_post_train", "student_after"}
    for family in ("math", "tool_use"):
        for side in ("before", "after", "teacher"):
            assert 0.0 <= metrics[f"family.{family}.accuracy_{side}"] <= 1.0
    # Both teacher names point at one folder: evaluated once, the same rows under each name.
    rows = {c: g.drop(columns="checkpoint").reset_index(drop=True) for c, g in summary.groupby("checkpoint")}
    pd.testing.assert_frame_equal(rows["teacher_kpop_rl"], rows["teacher_post_train"])
    all_rows = summary[summary["family"] == "all"].set_index("checkpoint")
    assert metrics["all.accuracy_after"] == all_rows.loc["student_after", "accuracy"]
    assert metrics["all.accuracy_before"] == all_rows.loc["student_before", "accuracy"]
    assert all(isinstance(v, float) for k, v in metrics.items() if k != "contracts")


def test_the_student_gains_on_the_families_its_teacher_solves(distilled):
    metrics = distilled.metrics
    for family in ("math", "tool_use"):
        assert metrics[f"family.{family}.accuracy_after"] >= metrics[f"family.{family}.accuracy_before"], family
    assert metrics["agentic.accuracy_gain"] > 0.0
    assert metrics["all.accuracy_after"] > metrics["all.accuracy_before"]


def test_teacher_samples_carry_the_stop_decision(world, distilled):
    from corpus.tokenizer import EOS, load_tokenizer

    eos = load_tokenizer(world.curated / "tokenizer").token_to_id(EOS)
    samples = pd.read_parquet(distilled.out_dir / "teacher_samples.parquet")
    # The memorising teacher stops well inside its budget: its EOS is a distillation target like any token.
    pairs = zip(samples["response_ids"], samples["response_mask"], strict=True)
    ends = [ids[-1] == eos and mask[-1] == 1 for ids, mask in pairs]
    assert sum(ends) >= len(ends) / 2


def test_self_distillation_is_the_fixed_point_of_the_on_policy_loss(world, tmp_path):
    """The lead may pass post_train's folder as both teachers, and it is also the student: the reverse-KL
    estimate of a model against itself is exactly 0 and the ratio exactly 1."""
    from training.distill.run import run_distill

    d = world.cfg.distill
    cfg = dataclasses.replace(world.cfg, distill=dataclasses.replace(d, logit=dataclasses.replace(d.logit, steps=0)))
    logged = []
    metrics = run_distill(
        cfg,
        world.curated,
        {"post_train": world.student, "kpop_rl": world.student},
        world.student,
        tmp_path,
        on_log=lambda phase, step, m: logged.append((phase, step, dict(m))),
    )
    steps = [m for phase, _, m in logged if phase == "on_policy" and m.get("rollouts", 0) > 0]
    assert steps, logged
    assert steps[0]["reverse_kl"] == pytest.approx(0.0, abs=1e-6)
    assert steps[0]["ratio_max"] == pytest.approx(1.0, abs=1e-6)
    # The student evaluated once and relabelled as each teacher: identical accuracies.
    assert metrics["eval.student_before.all.accuracy"] == metrics["eval.teacher_post_train.all.accuracy"]


def test_a_table_whose_every_sample_breaks_its_contract_stops_the_stage_and_says_why(world, tmp_path):
    from training.distill.run import run_distill

    cfg = dataclasses.replace(world.cfg, distill=dataclasses.replace(world.cfg.distill, max_sample_tokens=2))
    with pytest.raises(NoRowsLeft, match="length_out_of_bounds"):
        run_distill(
            cfg, world.curated, {"post_train": world.teacher, "kpop_rl": world.teacher}, world.student, tmp_path
        )
    quarantine = pd.read_parquet(tmp_path / "quarantine.parquet")
    assert len(quarantine) >= 1
    assert set(quarantine["rule"]) == {"length_out_of_bounds"}
    assert set(quarantine["table"]) == {"teacher_samples"}
    assert np.all(quarantine["row_id"].str.contains("/"))
