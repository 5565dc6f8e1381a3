"""Multi-turn rollouts against the task environments, with any engine that has ``generate``.

A rollout generates until the model emits a tool call (stop string ``</call>``), lets the environment
answer it, appends the observation, and continues — up to ``max_turns`` calls and ``max_new_tokens``
model tokens in all. Observation tokens are part of the transcript but not of the policy: their mask is
0 and their logprob 0, so RL losses and token counts see model tokens only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from environments import TOOL_CALL_STOP
from inference.sampling import SamplingParams


@dataclass
class Rollout:
    task: Any
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)  # 1 = model token, 0 = environment observation
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    tool_calls: int = 0
    finish_reason: str = "length"

    @property
    def model_tokens(self) -> int:
        return sum(self.response_mask)


def rollout(
    engine, envs: Mapping[str, Any], tasks: Sequence[Any], params: SamplingParams, *, max_turns: int = 4
) -> list[Rollout]:
    states = [Rollout(task=t, prompt_ids=engine.encode(t.prompt)) for t in tasks]
    active = list(range(len(states)))
    stops = tuple(dict.fromkeys((*params.stop, TOOL_CALL_STOP)))
    round_index = 0
    while active:
        budget = {i: params.max_new_tokens - states[i].model_tokens for i in active}
        # One engine call per round; a row's budget is enforced by truncation below.
        round_params = replace(
            params, stop=stops, max_new_tokens=max(budget.values()), seed=params.seed + 7919 * round_index
        )
        round_index += 1
        outs = engine.generate([states[i].prompt_ids + states[i].response_ids for i in active], round_params)
        next_active = []
        for i, gen in zip(active, outs, strict=True):
            s = states[i]
            keep = min(len(gen.token_ids), budget[i])
            s.response_ids += gen.token_ids[:keep]
            s.response_mask += [1] * keep
            s.logprobs += gen.logprobs[:keep]
            s.text += gen.text if keep == len(gen.token_ids) else engine.decode(gen.token_ids[:keep])
            s.finish_reason = gen.finish_reason if keep == len(gen.token_ids) else "length"
            wants_tool = gen.finish_reason == "stop" and gen.stop_string == TOOL_CALL_STOP
            if (
                wants_tool
                and keep == len(gen.token_ids)
                and s.tool_calls < max_turns
                and s.model_tokens < params.max_new_tokens
            ):
                observation = envs[s.task.family].observe(s.task, s.text)
                if observation:
                    obs_ids = engine.encode(observation)
                    s.response_ids += obs_ids
                    s.response_mask += [0] * len(obs_ids)
                    s.logprobs += [0.0] * len(obs_ids)
                    s.text += observation
                    s.tool_calls += 1
                    next_active.append(i)
        active = next_active
    return states
