"""The preference phase applies the focal rubric weights (METHODS §6.4): they score each step's pairs and
weight each pair's loss, and a pair of weight zero contributes no gradient to the model."""

import copy
from types import SimpleNamespace

import pytest
import torch

from configs import resolve
from configs.model import tiny_model
from data_contracts import QuarantineLedger
from model import Ling2ForCausalLM
from training.objectives import FocalRubricWeights, PreferenceConfig, focal_pair_weights, rubric_matrix
from training.post_train import preference, rl

# One prompt's samples: shortest correct, correct but longer, correct but redundant, wrong.
RESPONSES = [("Answer: 2", True), ("1+1=2\nAnswer: 2", True), ("1+1=2\n1+1=2\nAnswer: 2", True), ("Answer: 3", False)]


class ByteTokenizer:
    """Enough of a tokenizer for the phase: token ids are bytes, the pad id is 0."""

    def encode(self, text, add_special_tokens=False):
        return SimpleNamespace(ids=[b % 255 + 1 for b in text.encode()])

    def token_to_id(self, token):
        return 0


def _rolls(tasks, tokenizer):
    rolls = []
    for task in tasks:
        for text, _ in RESPONSES:
            ids = tokenizer.encode(text).ids
            prompt = tokenizer.encode(task.prompt).ids
            rolls.append(
                SimpleNamespace(
                    task=task, text=text, prompt_ids=prompt, response_ids=ids, response_mask=[1] * len(ids),
                    model_tokens=len(ids),
                )
            )  # fmt: skip
    return rolls


def _run_phase(monkeypatch, overrides):
    tokenizer = ByteTokenizer()
    tasks = [SimpleNamespace(task_id=f"t{i}", family="math", prompt=f"{i}+{2 - i}=?") for i in range(3)]
    verdicts = dict(RESPONSES)
    envs = {"math": SimpleNamespace(verify=lambda task, text: SimpleNamespace(correct=verdicts[text], format_ok=True))}
    monkeypatch.setattr(rl, "sample_groups", lambda model, tok, envs, batch, **kw: _rolls(batch, tok))
    calls = []
    real = preference.pair_loss

    def spy(policy, reference, chosen, rejected, score_c, score_r, weight_P, loss_cfg, pad_id):
        calls.append({"rejected": [r.text for r in rejected], "weights": weight_P.clone(), "score_r": score_r.clone()})
        return real(policy, reference, chosen, rejected, score_c, score_r, weight_P, loss_cfg, pad_id)

    monkeypatch.setattr(preference, "pair_loss", spy)
    cfg = resolve(
        "tiny_cpu",
        {
            "post_train.engine.backend": "torch",
            "post_train.preference.steps": 2,
            "post_train.preference.prompts_per_step": 3,
            "post_train.preference.max_pairs_per_prompt": 3,
            **overrides,
        },
    )
    torch.manual_seed(0)
    logs = []
    _, pairs = preference.preference_phase(
        Ling2ForCausalLM(tiny_model()), tokenizer, envs, tasks, cfg, lambda *a: logs.append(a), QuarantineLedger()
    )
    return cfg, calls, logs, pairs


def _expected_weights(cfg, steps):
    """The focal weights after ``steps`` updates on the scripted samples (3 identical prompt groups)."""
    p = cfg.post_train.preference
    focal = FocalRubricWeights(
        p.rubric_dims, PreferenceConfig(focal_gamma=p.focal_gamma, focal_momentum=p.focal_momentum)
    )
    group = [{"text": t, "correct": c, "format_ok": True, "length": len(t)} for t, c in RESPONSES]
    for _ in range(steps):
        weights = focal.update(torch.cat([rubric_matrix(group, p.rubric_dims)] * 3))
    return weights


def test_the_phase_weights_each_pair_by_the_focal_weight_of_its_dimension(monkeypatch):
    cfg, calls, logs, pairs = _run_phase(monkeypatch, {})
    assert len(calls) == 2 and len(pairs.kept) == 2 * 3 * 3
    kind = {"Answer: 3": "wrong", "1+1=2\nAnswer: 2": "longer", "1+1=2\n1+1=2\nAnswer: 2": "redundant"}
    for step, call in enumerate(calls, start=1):
        weights_D = _expected_weights(cfg, step)
        want = focal_pair_weights([kind[t] for t in call["rejected"]], cfg.post_train.preference.rubric_dims, weights_D)
        torch.testing.assert_close(call["weights"], want)
        logged = logs[step - 1][2]
        assert logged["focal_weight_concise"] == pytest.approx(float(weights_D[0]))
    # Not uniform: the scripted samples are never redundant-free, never equally long, in different measure.
    assert not torch.allclose(calls[0]["weights"], torch.ones_like(calls[0]["weights"]))
    wrong = [
        w for call in calls for w, t in zip(call["weights"].tolist(), call["rejected"], strict=True) if t == "Answer: 3"
    ]
    assert wrong and set(wrong) == {1.0}  # a pair against a wrong answer is never discounted


def test_focal_gamma_zero_keeps_every_pair_at_weight_one(monkeypatch):
    _, calls, logs, _ = _run_phase(monkeypatch, {"post_train.preference.focal_gamma": 0.0})
    for call in calls:
        torch.testing.assert_close(call["weights"], torch.ones_like(call["weights"]))
    # Scores then use uniform rubric weights, as before the focal mechanism was wired in.
    assert logs[0][2]["focal_weight_concise"] == pytest.approx(0.5)


def test_the_phase_loss_of_a_zero_weight_pair_leaves_the_model_gradient_to_the_others():
    torch.manual_seed(0)
    model = Ling2ForCausalLM(tiny_model())
    reference = copy.deepcopy(model).eval()
    tokenizer = ByteTokenizer()
    task = SimpleNamespace(task_id="t0", family="math", prompt="1+1=?")
    rolls = _rolls([task], tokenizer)
    chosen, rejected = [rolls[0], rolls[0]], [rolls[3], rolls[2]]
    scores = torch.tensor([1.0, 1.0]), torch.tensor([-1.0, 0.2])
    cfg = PreferenceConfig()

    def grads(weight, chosen=chosen, rejected=rejected, scores=scores):
        model.zero_grad()
        loss, _ = preference.pair_loss(model, reference, chosen, rejected, *scores, weight, cfg, 0)
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    none = grads(torch.zeros(2))
    assert all(g.abs().sum() == 0 for g in none)
    first_only = grads(torch.tensor([1.0, 0.0]))
    alone = grads(torch.ones(1), chosen[:1], rejected[:1], (scores[0][:1], scores[1][:1]))
    assert sum(g.abs().sum() for g in alone) > 0
    # Loss divided by P = 2: the first pair's gradient at half strength, none from the second.
    for got, want in zip(first_only, alone, strict=True):
        torch.testing.assert_close(got, 0.5 * want, atol=1e-6, rtol=1e-4)
    both = grads(torch.ones(2))
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(both, first_only, strict=True))
