"""The post-training stage rerun after a crash in its last phase: the finished phases come back from their last
checkpoints (no training), the interrupted one resumes from its newest, and the stage's outputs (metrics,
eval table, quarantine, exported weights) are those of an uninterrupted run."""

import json

import pandas as pd
import pytest
from phase_world import build_world, pipeline_config, weights_digest, write_stage_world

import environments
from training.post_train import preference


class Crash(RuntimeError):
    pass


def run_stage(world, tmp_path, name):
    from model import load_checkpoint
    from training.post_train.run import run_post_train

    out = tmp_path / name
    out.mkdir(exist_ok=True)
    metrics = run_post_train(
        world.cfg, tmp_path / "curate", tmp_path / "migrate", out, checkpoint_root=tmp_path / f"{name}-checkpoints"
    )
    weights = weights_digest(load_checkpoint(out / "checkpoint", base=world.cfg.model))
    return metrics, weights, pd.read_parquet(out / "eval_summary.parquet"), pd.read_parquet(out / "quarantine.parquet")


def test_a_stage_crashed_in_its_last_phase_reruns_to_the_uninterrupted_outputs(tmp_path, monkeypatch):
    cfg = pipeline_config(**{"post_train.eval.prompts_per_family": 2, "post_train.eval.max_new_tokens": 8})
    world = build_world(cfg)
    for name in ("curate", "migrate"):
        (tmp_path / name).mkdir()
    write_stage_world(world, tmp_path / "curate", tmp_path / "migrate")
    # The phases' environment everywhere in the stage (evaluation included): a rule some samples meet.
    monkeypatch.setattr(environments, "all_environments", lambda env_cfg: world.envs)
    straight = run_stage(world, tmp_path, "straight")

    real, calls = preference.PreferenceBatches._next_step, []

    def crash_on_the_fourth_step(self):
        calls.append(self.step)
        if len(calls) == 4:
            raise Crash("killed in the preference phase")
        return real(self)

    monkeypatch.setattr(preference.PreferenceBatches, "_next_step", crash_on_the_fourth_step)
    with pytest.raises(Crash):
        run_stage(world, tmp_path, "victim")
    monkeypatch.setattr(preference.PreferenceBatches, "_next_step", real)
    # It had checkpointed the preference phase before the crash (and finished SFT and RL).
    assert list((tmp_path / "victim-checkpoints").glob("*/preference/step-*"))
    resumed = run_stage(world, tmp_path, "victim")

    assert json.dumps(resumed[0], sort_keys=True) == json.dumps(straight[0], sort_keys=True)
    assert resumed[1] == straight[1]
    pd.testing.assert_frame_equal(resumed[2], straight[2])
    pd.testing.assert_frame_equal(resumed[3], straight[3])
    assert straight[0]["preference"]["pairs"] > 0 and "loss" in straight[0]["rl"]
