"""A stage started on several processes needs a body for its ranks > 0 (``Stage.worker_body``); without one it
refuses at once, naming the cluster keys, instead of leaving rank 0 waiting for ranks that already returned."""

import pytest

from configs import resolve
from tasks.stage import Stage, execute


def test_a_single_process_stage_refuses_a_multi_process_start(monkeypatch, tmp_path):
    ran = []
    stage = Stage(name="post_train", doc="", inputs=(), body="builtins:print")
    monkeypatch.setattr(Stage, "resolve", lambda self, dotted: ran.append)
    monkeypatch.setenv("WORLD_SIZE", "16")
    with pytest.raises(RuntimeError, match=r"one process only .* started on 16: give it cluster\.post_train\.nnodes"):
        execute(stage, resolve("tiny_cpu"), None, {}, {})
    assert ran == []
