"""A row advanced in chunks is the row ``inference.rollout`` writes in one call per turn: same tokens, masks,
log-probs, text, tool calls and finish reason, even when a stop string straddles two chunks."""

from dataclasses import dataclass, field

import pytest

from environments import TOOL_CALL_STOP
from inference.rollout import rollout
from inference.sampling import Generation, SamplingParams
from training.rl.records import RolloutRecord
from training.rl.rows import RowParams, apply_chunk, apply_observation, chunk_params, chunk_seed

# "</call>" is split over two tokens, so a chunk boundary can fall inside it.
VOCAB = ["<eos>", "Q", "x", "y", "<call>go</", "call>", "<result>ok</result>", "Answer: 1"]


class Tokenizer:
    def encode(self, text):
        ids, i = [], 0
        while i < len(text):
            token = max((t for t in range(1, len(VOCAB)) if text.startswith(VOCAB[t], i)), key=lambda t: len(VOCAB[t]))
            ids.append(token)
            i += len(VOCAB[token])
        return ids

    def decode(self, ids):
        return "".join(VOCAB[t] for t in ids if t)


@dataclass
class ScriptedEngine:
    """Writes ``script`` token by token (position = tokens written after the prompt's first token), with
    log-prob -0.01 * position; stops like ``NativeEngine`` (stop strings searched in the new text only)."""

    script: list[int]
    tokenizer: Tokenizer = field(default_factory=Tokenizer)

    def encode(self, text):
        return self.tokenizer.encode(text)

    def decode(self, ids):
        return self.tokenizer.decode(ids)

    def generate(self, prompts, params: SamplingParams):
        out = []
        for prompt in prompts:
            ids = list(prompt) if not isinstance(prompt, str) else self.encode(prompt)
            g = Generation(prompt_ids=ids)
            observations = {VOCAB.index("<result>ok</result>")}
            position = sum(1 for t in ids[1:] if t not in observations)
            for _ in range(params.max_new_tokens):
                token = self.script[position] if position < len(self.script) else 0
                if token == 0:
                    g.finish_reason = "eos"
                    break
                g.token_ids.append(token)
                g.logprobs.append(-0.01 * position)
                position += 1
                text = self.decode(g.token_ids)
                hit = next((s for s in params.stop if s in text), None)
                if hit:
                    g.finish_reason, g.stop_string = "stop", hit
                    break
            g.text = self.decode(g.token_ids)
            if g.stop_string:
                g.text = g.text[: g.text.find(g.stop_string) + len(g.stop_string)]
            out.append(g)
        return out


class Env:
    def observe(self, task, transcript):
        return "<result>ok</result>" if transcript.endswith(TOOL_CALL_STOP) else None


@dataclass(frozen=True)
class Task:
    prompt: str = "Q"
    family: str = "scripted"
    task_id: str = "t"


def chunked(engine, params: RowParams):
    record = RolloutRecord(prompt_index=0, sample=0, task_id="t", family="scripted", prompt_ids=engine.encode("Q"))
    stage, version = "generate", 0
    while stage != "verify":
        if stage == "generate":
            (gen,) = engine.generate([record.prompt_ids + record.response_ids], chunk_params(record, params))
            stage = apply_chunk(record, version, gen, params, engine.decode)
            version += 1  # every chunk under a new version: segments must follow
        else:
            stage = apply_observation(record, Env().observe(Task(), record.text), engine.encode)
    return record


X, Y, CALL_A, CALL_B, ANSWER = 2, 3, 4, 5, 7
SCRIPTS = {
    "plain_eos": [X, Y, X, ANSWER, 0],
    "two_calls": [X, CALL_A, CALL_B, Y, CALL_A, CALL_B, X, ANSWER, 0],
    "budget": [X] * 30,
    "call_at_budget": [X, X, X, CALL_A, CALL_B, Y, Y, 0],
    "turn_limit": [CALL_A, CALL_B] * 5 + [ANSWER, 0],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
@pytest.mark.parametrize("chunk_tokens", [1, 2, 3, 7, 64])
def test_chunked_rows_equal_one_call_per_turn(script, chunk_tokens):
    engine = ScriptedEngine(SCRIPTS[script])
    max_new = 5 if script == "call_at_budget" else 12
    reference = rollout(engine, {"scripted": Env()}, [Task()], SamplingParams(max_new_tokens=max_new), max_turns=3)[0]
    record = chunked(engine, RowParams(max_new_tokens=max_new, chunk_tokens=chunk_tokens, max_turns=3))
    assert record.response_ids == reference.response_ids
    assert record.response_mask == reference.response_mask
    assert record.logprobs == reference.logprobs
    assert (record.text, record.tool_calls, record.finish_reason) == (
        reference.text,
        reference.tool_calls,
        reference.finish_reason,
    )
    # Versions never decrease along the row; observation tokens carry the version before them.
    assert record.versions == sorted(record.versions)
    assert len(record.versions) == len(record.response_ids)


def test_segments_and_seeds():
    record = RolloutRecord(prompt_index=3, sample=1, task_id="t", family="f", prompt_ids=[1])
    record.versions = [0, 0, 1, 1, 1, 3]
    assert record.segments == [(0, 0, 2), (1, 2, 5), (3, 5, 6)]
    seeds = {chunk_seed(0, p, s, c) for p in range(5) for s in range(4) for c in range(6)}
    assert len(seeds) == 120 and all(0 <= x < 2**31 for x in seeds)
    assert chunk_seed(0, 1, 2, 3) == chunk_seed(0, 1, 2, 3) != chunk_seed(1, 1, 2, 3)
    with pytest.raises(ValueError):
        RowParams(chunk_tokens=0)
