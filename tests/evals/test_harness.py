"""The harness measured against a scripted policy whose every answer, token and tool call is known."""

import math
import re

import numpy as np
import pytest
import torch
from scripted_engine import ScriptedEngine

from configs.data import EnvironmentsConfig
from environments import all_environments
from evals.harness import evaluate_policy, heldout_loss, score_rollouts, summarise, unigram_loss
from inference.sampling import SamplingParams

OBSERVATION = re.compile(r"<result>.*?</result>\n", re.S)
PARAMS = SamplingParams(temperature=0.0, max_new_tokens=400)


def model_chars(response: str) -> int:
    """What a one-character-per-token policy writes of ``response``: all but the tools' result blocks."""
    return len(response) - sum(len(m) for m in OBSERVATION.findall(response))


@pytest.fixture(scope="module")
def scripted():
    """(envs, tasks, engine, expected verdict per task id): two right and one wrong math answer, a tool
    answer with and one without its tool call, a right search and workflow episode, an unformatted code answer."""
    envs = all_environments(EnvironmentsConfig())
    math_tasks = envs["math"].generate(3, seed=1, difficulty=2)
    tool_tasks = envs["tool_use"].generate(2, seed=1, difficulty=1)
    search_task = envs["search"].generate(1, seed=1, difficulty=3)[0]
    flow_task = envs["workflow"].generate(1, seed=1, difficulty=3)[0]
    code_task = envs["code"].generate(1, seed=1, difficulty=1)[0]

    def ref(task, style: int = 0) -> str:
        return envs[task.family].reference_responses(task, seed=0, n=4)[style].text

    script = {
        math_tasks[0].prompt: ref(math_tasks[0]),
        math_tasks[1].prompt: ref(math_tasks[1], style=1),
        math_tasks[2].prompt: f"Answer: {int(math_tasks[2].answer) + 1}",
        tool_tasks[0].prompt: ref(tool_tasks[0], style=1),
        tool_tasks[1].prompt: f"Answer: {tool_tasks[1].answer}",
        search_task.prompt: ref(search_task),
        flow_task.prompt: ref(flow_task, style=1),
        code_task.prompt: "def f(s): return s",
    }
    expected = {
        math_tasks[0].task_id: (True, True),
        math_tasks[1].task_id: (True, True),
        math_tasks[2].task_id: (False, True),
        tool_tasks[0].task_id: (True, True),
        tool_tasks[1].task_id: (False, True),  # right value, but the task demands the tool
        search_task.task_id: (True, True),
        flow_task.task_id: (True, True),
        code_task.task_id: (False, False),
    }
    tasks = [*math_tasks, *tool_tasks, search_task, flow_task, code_task]
    return envs, tasks, ScriptedEngine(script), expected, script


def test_verdicts_tokens_and_tool_calls_per_rollout(scripted):
    envs, tasks, engine, expected, script = scripted
    _, rows = evaluate_policy(engine, envs, tasks, checkpoint="scripted", params=PARAMS)
    assert list(rows["prompt_id"]) == [t.task_id for t in tasks]
    for task, row in zip(tasks, rows.itertuples(), strict=True):
        assert (row.correct, row.format_ok) == expected[task.task_id], (task.task_id, row.response)
        assert row.response == script[task.prompt]
        assert row.tokens == model_chars(script[task.prompt])
        assert row.tool_calls == script[task.prompt].count("</call>")


def test_summary_per_family_is_exact(scripted):
    envs, tasks, engine, expected, script = scripted
    summary, _ = evaluate_policy(engine, envs, tasks, checkpoint="scripted", params=PARAMS)
    by_family = summary.set_index("family")
    for family in ("math", "tool_use", "search", "workflow", "code", "all"):
        mine = [t for t in tasks if family in ("all", t.family)]
        correct = [t for t in mine if expected[t.task_id][0]]
        tokens = [model_chars(script[t.prompt]) for t in mine]
        row = by_family.loc[family]
        assert row["n"] == len(mine)
        assert row["accuracy"] == pytest.approx(len(correct) / len(mine))
        assert row["format_rate"] == pytest.approx(np.mean([expected[t.task_id][1] for t in mine]))
        assert row["mean_tokens"] == pytest.approx(np.mean(tokens))
        if correct:
            assert row["mean_tokens_correct"] == pytest.approx(
                np.mean([model_chars(script[t.prompt]) for t in correct])
            )
        else:
            assert math.isnan(row["mean_tokens_correct"])
    assert by_family.loc["math", "accuracy"] == pytest.approx(2 / 3)
    assert by_family.loc["all", "accuracy"] == pytest.approx(5 / 8)


def test_token_budget_truncates_and_fails_the_answer(scripted):
    envs, tasks, engine, _, script = scripted
    task = tasks[0]
    budget = len(script[task.prompt]) - 1
    _, rows = evaluate_policy(
        engine, envs, [task], checkpoint="scripted", params=SamplingParams(temperature=0.0, max_new_tokens=budget)
    )
    assert rows["tokens"].item() == budget and not rows["correct"].item()


class UniformLM(torch.nn.Module):
    """Equal logits for every token: cross-entropy log V at every position."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return type("Out", (), {"logits": torch.zeros(*ids.shape, self.vocab) + self.anchor})()


def test_heldout_loss_of_a_uniform_model_is_log_vocab():
    tokens = np.arange(100, dtype=np.uint16) % 7
    loss = heldout_loss(UniformLM(7), tokens, seq_len=8, batch_size=3, max_windows=5)
    assert loss == pytest.approx(math.log(7), abs=1e-6)
    with pytest.raises(ValueError, match="shorter than one window"):
        heldout_loss(UniformLM(7), tokens[:8], seq_len=8)


def test_heldout_loss_counts_only_full_windows():
    """A model that is right (p=1) on window 0's targets and uniform elsewhere: the mean covers the
    windows used, in any batch split."""

    class Memo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            logits = torch.zeros(*ids.shape, 5)
            logits[..., 0] = 1e4  # always predicts token 0
            return type("Out", (), {"logits": logits + self.w})()

    tokens = np.zeros(33, dtype=np.uint16)
    tokens[20:] = 3  # windows of 8: targets of window 2 hold 3s, window 3 too
    loss_two = heldout_loss(Memo(), tokens, seq_len=8, max_windows=2)
    assert loss_two == pytest.approx(0.0, abs=1e-6)
    split = [heldout_loss(Memo(), tokens, seq_len=8, max_windows=4, batch_size=b) for b in (1, 3, 4)]
    assert split[0] == pytest.approx(split[1]) == pytest.approx(split[2]) and split[0] > 0


def test_unigram_loss_by_hand():
    # counts + 1 = [3, 2, 1] of 6: held-out [0, 1] costs -(log 1/2 + log 1/3) / 2.
    got = unigram_loss(np.array([0, 0, 1]), np.array([0, 1]), vocab_size=3)
    assert got == pytest.approx(-(math.log(1 / 2) + math.log(1 / 3)) / 2)


# Direct tests of the pieces, on hand-made rows: every number below is checkable by hand.


class FixedVerdicts:
    """An environment whose verdict is looked up by response text, recording what it was asked."""

    def __init__(self, verdicts):
        self.verdicts, self.asked = verdicts, []

    def verify(self, task, text):
        self.asked.append((task.task_id, text))
        correct, format_ok = self.verdicts[text]
        return type("Verdict", (), {"correct": correct, "format_ok": format_ok})()


def test_score_rollouts_asks_each_rollouts_own_family_and_copies_its_counts():
    from types import SimpleNamespace

    from inference.rollout import Rollout

    math_env, code_env = FixedVerdicts({"4": (True, True), "5": (False, True)}), FixedVerdicts({"x": (False, False)})
    task = lambda i, family: SimpleNamespace(task_id=f"{family}-{i}", family=family, difficulty=i)  # noqa: E731
    rolls = [
        Rollout(task=task(1, "math"), prompt_ids=[1], response_ids=[7, 8], response_mask=[1, 1], text="4"),
        # Two observation tokens (mask 0) count as no model tokens; one tool call.
        Rollout(task=task(2, "code"), prompt_ids=[1], response_ids=[7, 8, 9], response_mask=[1, 0, 0], text="x",
                tool_calls=1),
        Rollout(task=task(3, "math"), prompt_ids=[1], response_ids=[7], response_mask=[1], text="5"),
    ]  # fmt: skip
    rows = score_rollouts({"math": math_env, "code": code_env}, rolls)
    assert math_env.asked == [("math-1", "4"), ("math-3", "5")] and code_env.asked == [("code-2", "x")]
    assert list(rows.columns) == [
        "prompt_id", "family", "difficulty", "correct", "format_ok", "tokens", "tool_calls", "response",
    ]  # fmt: skip
    assert rows.to_dict("list") == {
        "prompt_id": ["math-1", "code-2", "math-3"],
        "family": ["math", "code", "math"],
        "difficulty": [1, 2, 3],
        "correct": [True, False, False],
        "format_ok": [True, False, True],
        "tokens": [2, 1, 1],
        "tool_calls": [0, 1, 0],
        "response": ["4", "x", "5"],
    }


def test_summarise_by_hand():
    import pandas as pd

    scored = pd.DataFrame(
        {
            "family": ["math", "math", "math", "code"],
            "correct": [True, False, True, False],
            "format_ok": [True, True, False, False],
            "tokens": [10, 20, 30, 7],
        }
    )
    summary = summarise(scored, "ckpt")
    # Families sorted, then "all"; the EvalResult contract passed (summarise validates).
    assert list(summary["family"]) == ["code", "math", "all"] and set(summary["checkpoint"]) == {"ckpt"}
    by = summary.set_index("family")
    assert by.loc["math", ["n", "accuracy", "format_rate", "mean_tokens", "mean_tokens_correct"]].tolist() == [
        3, 2 / 3, 2 / 3, 20.0, 20.0,  # correct answers: 10 and 30 tokens
    ]  # fmt: skip
    # No correct code answer: tokens per correct answer is undefined (NaN), not 0.
    assert by.loc["code", ["n", "accuracy", "format_rate", "mean_tokens"]].tolist() == [1, 0.0, 0.0, 7.0]
    assert math.isnan(by.loc["code", "mean_tokens_correct"])
    assert by.loc["all", ["n", "accuracy", "format_rate", "mean_tokens", "mean_tokens_correct"]].tolist() == [
        4, 0.5, 0.5, 16.75, 20.0,
    ]  # fmt: skip


def test_summarise_rejects_a_family_the_contract_does_not_know():
    import pandas as pd
    import pandera.errors

    scored = pd.DataFrame({"family": ["poetry"], "correct": [True], "format_ok": [True], "tokens": [3]})
    with pytest.raises(pandera.errors.SchemaError):
        summarise(scored, "ckpt")


def test_heldout_loss_stops_at_max_windows():
    """Window w covers tokens [8w, 8w + 8]. The model gives p(0) = 3/4 everywhere; the targets of windows 0-1
    are 0s, those of window 2 are 1s: ``max_windows=2`` must not count window 2, ``max_windows=3`` must."""
    tokens = np.zeros(8 * 4 + 1, dtype=np.uint16)
    tokens[17:] = 1  # targets of window 2 onwards are 1s

    class AlwaysZero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            logits = torch.zeros(*ids.shape, 2)
            logits[..., 0] = math.log(3)  # p(0) = 3/4, p(1) = 1/4
            return type("Out", (), {"logits": logits + self.w})()

    model = AlwaysZero().train()
    two = heldout_loss(model, tokens, seq_len=8, max_windows=2)
    assert two == pytest.approx(-math.log(3 / 4))
    three = heldout_loss(model, tokens, seq_len=8, max_windows=3)
    assert three == pytest.approx((16 * -math.log(3 / 4) + 8 * -math.log(1 / 4)) / 24)
    assert model.training  # the mode it came in with comes back


def test_unigram_loss_smooths_unseen_tokens():
    # Train [0, 0, 0] over a vocabulary of 4: counts + 1 = [4, 1, 1, 1] of 7; an unseen held-out token 3
    # costs log 7 (add-one smoothing), token 0 costs log 7/4.
    got = unigram_loss(np.array([0, 0, 0], dtype=np.uint16), np.array([3, 0], dtype=np.uint16), vocab_size=4)
    assert got == pytest.approx((math.log(7) + math.log(7 / 4)) / 2)
