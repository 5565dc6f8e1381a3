import pytest
import torch

from configs.data import EnvironmentsConfig
from configs.model import tiny_model
from corpus.tokenizer import EOS, PAD, train_tokenizer
from environments import all_environments
from inference.native import NativeEngine
from inference.rollout import rollout
from inference.sampling import SamplingParams
from model import Ling2ForCausalLM

CORPUS = ["[math] 1+2=?\n1+2=3\nAnswer: 3", '[tool] Convert 2 h to min\n<call>{"tool":"convert"}</call>'] * 40


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    tok = train_tokenizer(CORPUS, vocab_size=300)
    cfg = tiny_model()
    model = Ling2ForCausalLM(cfg)
    model.eval()
    return NativeEngine(model, tok, eos_id=tok.token_to_id(EOS), pad_id=tok.token_to_id(PAD), batch_size=4)


def test_cached_decode_logprobs_equal_full_forward(engine):
    prompts = ["[math] 1+2=?\n", "[tool] Convert 2 h to min\n", "x"]
    gens = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=12, seed=3))
    for g in gens:
        full = torch.tensor([g.prompt_ids + g.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(engine.model(full).logits.float()[0], -1)
        positions = range(len(g.prompt_ids) - 1, len(g.prompt_ids) - 1 + len(g.token_ids))
        expected = [float(logp[p, t]) for p, t in zip(positions, g.token_ids, strict=True)]
        assert g.logprobs == pytest.approx(expected, abs=1e-4)


def test_batch_composition_does_not_change_a_row(engine):
    params = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=10, seed=11)
    together = engine.generate(["[math] 1+2=?\n", "a much longer prompt to force left padding\n"], params)
    alone = engine.generate(["[math] 1+2=?\n"], params)
    assert together[0].token_ids == alone[0].token_ids
    assert together[0].logprobs == pytest.approx(alone[0].logprobs, abs=1e-4)


def test_seeded_sampling_is_reproducible_and_greedy_is_argmax(engine):
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=5)
    a = engine.generate(["[math] 1+2=?\n"] * 3, params)
    b = engine.generate(["[math] 1+2=?\n"] * 3, params)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    greedy = engine.generate(["[math] 1+2=?\n"], SamplingParams(temperature=0.0, max_new_tokens=1))[0]
    with torch.no_grad():
        logits = engine.model(torch.tensor([greedy.prompt_ids])).logits[0, -1]
    if greedy.token_ids:
        assert greedy.token_ids[0] == int(logits.argmax())


def test_stop_strings_and_budget(engine):
    params = SamplingParams(temperature=1.0, max_new_tokens=5, seed=0)
    for g in engine.generate(["x", "y"], params):
        assert len(g.token_ids) <= 5
        assert g.finish_reason in {"length", "eos"}
    # Any text contains itself: stopping on the first generated character must end the row at once.
    g = engine.generate(["x"], SamplingParams(temperature=1.0, max_new_tokens=20, seed=0))[0]
    if g.text:
        first = g.text[0]
        stopped = engine.generate(["x"], SamplingParams(temperature=1.0, max_new_tokens=20, seed=0, stop=(first,)))[0]
        assert stopped.finish_reason == "stop" and stopped.text.endswith(first) and stopped.text.count(first) == 1


class ScriptedEngine:
    """Replays fixed completions; lets the rollout loop be tested without a trained model."""

    def __init__(self, tok, script):
        self.tok, self.script, self.calls = tok, list(script), 0

    def encode(self, text):
        return self.tok.encode(text).ids

    def decode(self, ids):
        return self.tok.decode(ids)

    def generate(self, prompts, params):
        from inference.sampling import Generation

        out = []
        for p in prompts:
            text = self.script[self.calls]
            self.calls += 1
            ids = self.encode(text)
            stop = next((s for s in params.stop if s in text), None)
            out.append(
                Generation(
                    prompt_ids=list(p),
                    token_ids=ids,
                    logprobs=[-0.5] * len(ids),
                    text=text,
                    finish_reason="stop" if stop else "eos",
                    stop_string=stop,
                )
            )
        return out


def test_rollout_runs_tools_and_masks_observations():
    envs = all_environments(EnvironmentsConfig())
    task = envs["tool_use"].generate(1, seed=1, difficulty=1)[0]
    reference = next(c for c in envs["tool_use"].reference_responses(task, seed=0, n=4) if c.style == "short")
    call, after = reference.text.split("</call>", 1)
    final = after.split("</result>\n", 1)[1]
    tok = train_tokenizer(CORPUS + [reference.text] * 5, vocab_size=400)
    engine = ScriptedEngine(tok, [call + "</call>", final])
    [r] = rollout(engine, envs, [task], SamplingParams(max_new_tokens=200))
    assert r.tool_calls == 1
    assert envs["tool_use"].verify(task, r.text).correct, r.text
    observation = [i for i, m in zip(r.response_ids, r.response_mask, strict=True) if m == 0]
    assert "<result>" in tok.decode(observation)
    assert all(lp == 0.0 for lp, m in zip(r.logprobs, r.response_mask, strict=True) if m == 0)
    assert r.model_tokens == len(r.response_ids) - len(observation)


def test_rows_finishing_early_do_not_disturb_the_others(engine):
    # Row 0 stops at its first generated character; the others keep sampling with their own generators.
    params = SamplingParams(temperature=1.0, max_new_tokens=10, seed=21)
    free = engine.generate(["x", "[math] 1+2=?\n", "y"], params)
    first = free[0].text[:1]
    assert first, "row 0 produced no text to stop on"
    stopped = engine.generate(
        ["x", "[math] 1+2=?\n", "y"], SamplingParams(temperature=1.0, max_new_tokens=10, seed=21, stop=(first,))
    )
    assert stopped[0].finish_reason == "stop"
    for a, b in zip(free[1:], stopped[1:], strict=True):
        if first not in a.text:
            assert a.token_ids == b.token_ids
