"""One rollout row advanced one engine call at a time, so a row can pause between calls and resume later,
possibly under a newer policy version (a partial rollout).

The semantics are ``inference.rollout``'s: generate until a tool call (``</call>``), append the
environment's observation (mask 0, log-prob 0), continue; at most ``max_turns`` calls and
``max_new_tokens`` model tokens. A turn is generated in chunks of ``chunk_tokens``; every chunk is
sampled with a seed derived from (seed, prompt, sample, chunk number) alone, so a row's tokens depend on
the versions it met and on nothing else — not on the thread, the batch or the moment it ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from environments import TOOL_CALL_STOP
from inference.sampling import Generation, SamplingParams
from training.rl.records import RolloutRecord, Stage


@dataclass(frozen=True, kw_only=True)
class RowParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    chunk_tokens: int = 16
    max_turns: int = 4
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1 or self.max_new_tokens < 1 or self.max_turns < 0:
            raise ValueError(f"invalid row params {self}")


def chunk_seed(seed: int, prompt_index: int, sample: int, chunk: int) -> int:
    digest = hashlib.blake2b(f"{seed}|{prompt_index}|{sample}|{chunk}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def chunk_params(record: RolloutRecord, params: RowParams) -> SamplingParams:
    budget = min(params.chunk_tokens, params.max_new_tokens - record.model_tokens)
    return SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=budget,
        stop=tuple(dict.fromkeys((*params.stop, TOOL_CALL_STOP))),
        seed=chunk_seed(params.seed, record.prompt_index, record.sample, record.chunks),
    )


def _split_stop(
    decode: Callable[[Sequence[int]], str], before: list[int], tokens: list[int], stops: Sequence[str]
) -> tuple[int, str] | None:
    """(tokens to keep, stop string) when a stop string completes inside ``tokens`` given the turn so far.

    The engine searches only the text of the tokens it just generated, so a stop string that began in the
    previous chunk is found here; the row keeps the tokens up to the one that completes it, as the engine
    would have in one call."""
    if not any(s in decode(before + tokens) for s in stops):
        return None
    for keep in range(1, len(tokens) + 1):
        text = decode(before + tokens[:keep])
        hit = next((s for s in stops if s in text), None)
        if hit is not None:
            return keep, hit
    return None


def apply_chunk(
    record: RolloutRecord, version: int, gen: Generation, params: RowParams, decode: Callable[[Sequence[int]], str]
) -> Stage:
    """Append one engine call's tokens (tagged with ``version``); return what the row needs next."""
    tokens, logprobs = list(gen.token_ids), list(gen.logprobs)
    stop_hit = gen.stop_string if gen.finish_reason == "stop" else None
    if stop_hit is None:
        stops = tuple(dict.fromkeys((*params.stop, TOOL_CALL_STOP)))
        split = _split_stop(decode, record.response_ids[record.turn_start :], tokens, stops)
        if split is not None:
            keep, stop_hit = split
            tokens, logprobs = tokens[:keep], logprobs[:keep]
    record.response_ids += tokens
    record.response_mask += [1] * len(tokens)
    record.logprobs += logprobs
    record.versions += [version] * len(tokens)
    record.chunks += 1
    turn_text = decode(record.response_ids[record.turn_start :])
    if stop_hit is not None:
        # As the engines do: cut after the stop string, which may end inside a token.
        turn_text = turn_text[: turn_text.find(stop_hit) + len(stop_hit)]
    record.text = record.text[: record.turn_text_start] + turn_text
    out_of_tokens = record.model_tokens >= params.max_new_tokens
    if stop_hit == TOOL_CALL_STOP and record.tool_calls < params.max_turns and not out_of_tokens:
        return "observe"
    if stop_hit is not None or gen.finish_reason == "eos" or out_of_tokens:
        record.finish_reason = "stop" if stop_hit is not None else "eos" if gen.finish_reason == "eos" else "length"
        return "verify"
    return "generate"


def apply_observation(record: RolloutRecord, observation: str | None, encode: Callable[[str], list[int]]) -> Stage:
    """Append the environment's answer to a tool call (mask 0); no answer ends the row."""
    if not observation:
        record.finish_reason = "stop"
        return "verify"
    obs_ids = encode(observation)
    last_version = record.versions[-1]
    record.response_ids += obs_ids
    record.response_mask += [0] * len(obs_ids)
    record.logprobs += [0.0] * len(obs_ids)
    record.versions += [last_version] * len(obs_ids)
    record.text += observation
    record.tool_calls += 1
    record.turn_start, record.turn_text_start = len(record.response_ids), len(record.text)
    return "generate"
