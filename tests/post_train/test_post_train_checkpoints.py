"""Where the post-training phases keep their checkpoints and what a rerun of a finished phase does."""

from phase_world import PHASE_STEPS, build_world, pipeline_config, run_phase, weights_digest

from configs import resolve
from training.checkpoint import list_checkpoints, read_manifest
from training.post_train.run import post_train_checkpoint_root, training_key


def test_a_finished_phase_reruns_to_its_result_from_its_last_checkpoint_without_training(tmp_path):
    world = build_world(pipeline_config())
    first_logs, again_logs = [], []
    first_model, first = run_phase(world, "sft", tmp_path, lambda *a: first_logs.append(a))
    kept = list_checkpoints(tmp_path)
    # Every checkpoint_every (2) steps, the newest keep_checkpoints (2) kept; the last is the phase's end.
    assert [read_manifest(c)["step"] for c in kept] == [PHASE_STEPS["sft"] - 2, PHASE_STEPS["sft"]]
    again_model, again = run_phase(world, "sft", tmp_path, lambda *a: again_logs.append(a))
    assert again_logs == [] and len(first_logs) == PHASE_STEPS["sft"] // 2
    assert again == first and weights_digest(again_model) == weights_digest(first_model)
    assert weights_digest(again_model) != weights_digest(world.model())  # it did train, and came back trained


def test_the_checkpoint_folder_is_keyed_by_config_and_base_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LING26_STATE_DIR", str(tmp_path))
    assert post_train_checkpoint_root() == tmp_path / "checkpoints" / "post_train"
    cfg = resolve("tiny_cpu")
    key = training_key(cfg, "a" * 64)
    assert key == training_key(resolve("tiny_cpu"), "a" * 64)
    assert key != training_key(cfg, "b" * 64)  # another base never resumes this one's phases
    assert key != training_key(resolve("tiny_cpu", {"post_train.rl.steps": 3}), "a" * 64)
