"""A cheap stand-in for a language model and a task family, for tests and benchmarks of the RL machinery.

Everything here follows the real contracts, so the scheduler, weight sync and trainer run unchanged:
``ToyTokenizer`` (``encode`` / ``decode``), ``ToyEngine`` (``generate`` with ``SamplingParams``, per-token
log-probs, EOS and stop strings, exactly like ``inference.native.NativeEngine``), ``ToyEnvironment``
(``observe`` / ``verify``). The policy is a tiny bigram-plus-target model over ten tokens; the task is
"write letter X" (``[toy] b``), rewarded by the share of X among the written letters plus a bonus for
calling the ``ping`` tool once or more, so rows make tool calls and wait on the environment.

Shape legend: B rows, T tokens, V vocabulary, D hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from environments import Task, Verdict
from inference.sampling import Generation, SamplingParams, sample_next
from inference.weight_sync import InProcessBackend, VersionedEngine, WeightSync
from training.objectives.mismatch import MismatchConfig
from training.objectives.policy_gradient import PolicyLossConfig
from training.rl.environment import EnvironmentPool, Latency, no_latency
from training.rl.records import RolloutRecord
from training.rl.scheduler import AsyncRLScheduler, SchedulerConfig
from training.rl.trainer import DecoupledPPOTrainer

VOCAB = ("<eos>", "[toy] ", "a", "b", "c", "d", " ", "<call>ping</call>", "<result>pong</result>", "\n")
EOS_ID, PAD_ID = 0, 0
LETTERS = "abcd"
TOOL_BONUS = 0.25
OBSERVATION = "<result>pong</result>\n"


class ToyTokenizer:
    """Greedy longest-match over ``VOCAB``."""

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        by_length = sorted(range(1, len(VOCAB)), key=lambda t: -len(VOCAB[t]))
        while i < len(text):
            token = next((t for t in by_length if text.startswith(VOCAB[t], i)), None)
            if token is None:
                raise ValueError(f"toy tokenizer cannot encode {text[i:]!r}")
            ids.append(token)
            i += len(VOCAB[token])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(VOCAB[t] for t in ids if t != EOS_ID)


class ToyPolicy(nn.Module):
    """logits_t = W tanh(E[token_t] + C[target]); the target letter is the prompt's second token."""

    def __init__(self, hidden: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(0.3 * torch.randn(len(VOCAB), hidden, generator=g))
        self.target = nn.Parameter(0.3 * torch.randn(len(VOCAB), hidden, generator=g))
        self.out = nn.Parameter(0.3 * torch.randn(hidden, len(VOCAB), generator=g))

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        h_BTD = torch.tanh(self.embed[ids_BT] + self.target[ids_BT[:, 1]][:, None])
        return h_BTD @ self.out  # [B, T, V]


class ToyEngine:
    """Samples like ``NativeEngine`` (row i seeded with ``seed + i``); ``logits_dtype`` rounds the engine's
    logits (e.g. bf16) to give it a training-inference mismatch."""

    def __init__(self, model: ToyPolicy, *, logits_dtype: torch.dtype = torch.float32):
        self.model = model
        self.tokenizer = ToyTokenizer()
        self.logits_dtype = logits_dtype

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams) -> list[Generation]:
        out = []
        for i, prompt in enumerate(prompts):
            ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
            generator = torch.Generator().manual_seed(params.seed + i)
            g = Generation(prompt_ids=list(ids))
            for _ in range(params.max_new_tokens):
                logits_V = self.model(torch.tensor([ids + g.token_ids]))[0, -1].to(self.logits_dtype).float()
                token = int(sample_next(logits_V[None], params, [generator])[0])
                if token == EOS_ID:
                    g.finish_reason = "eos"
                    break
                g.token_ids.append(token)
                g.logprobs.append(float(torch.log_softmax(logits_V, dim=-1)[token]))
                text = self.decode(g.token_ids)
                hit = next((s for s in params.stop if s in text), None)
                if hit is not None:
                    g.finish_reason, g.stop_string = "stop", hit
                    break
            g.text = self.decode(g.token_ids)
            if g.stop_string:
                g.text = g.text[: g.text.find(g.stop_string) + len(g.stop_string)]
            out.append(g)
        return out


class ToyEnvironment:
    family = "toy"

    def observe(self, task: Task, transcript: str) -> str | None:
        return OBSERVATION if transcript.endswith("</call>") else None

    def verify(self, task: Task, response: str) -> Verdict:
        letters = [ch for ch in response.replace(OBSERVATION, "") if ch in LETTERS]
        share = sum(ch == task.answer for ch in letters) / max(1, len(letters))
        return Verdict(correct=share >= 0.5, format_ok=True, extracted=None, reason=f"share {share:.2f}")


def toy_tasks(n: int = 8) -> list[Task]:
    return [
        Task(
            task_id=f"toy-{i}",
            family="toy",
            difficulty=1,
            prompt=f"[toy] {LETTERS[i % len(LETTERS)]}\n",
            answer=LETTERS[i % len(LETTERS)],
            payload="{}",
        )
        for i in range(n)
    ]


def toy_reward(records: Sequence[RolloutRecord], verdicts: Sequence[Verdict]) -> list[float]:
    """Share of the target letter among the letters the model wrote, plus ``TOOL_BONUS`` if it called."""
    rewards = []
    for r in records:
        target = VOCAB[r.prompt_ids[1]]
        letters = [VOCAB[t] for t, m in zip(r.response_ids, r.response_mask, strict=True) if m and VOCAB[t] in LETTERS]
        share = sum(ch == target for ch in letters) / max(1, len(letters))
        rewards.append(share + (TOOL_BONUS if r.tool_calls else 0.0))
    return rewards


def toy_scheduler(
    cfg: SchedulerConfig,
    *,
    checkpoint_dir: Path | None = None,
    latency: Latency = no_latency,
    loss_cfg: PolicyLossConfig | None = None,
    correction: MismatchConfig | None = None,
    lr: float = 0.05,
    engine_logits_dtype: torch.dtype = torch.float32,
    env_workers: int = 64,
    tasks: int = 8,
) -> AsyncRLScheduler:
    """The whole asynchronous RL stack on the toy: trainer, a separate engine copy fed by weight sync,
    environment pool, scheduler. The engine's model starts from other weights: only a push makes it usable."""
    policy = ToyPolicy(seed=cfg.seed)
    engine_model = ToyPolicy(seed=cfg.seed + 1)
    engine = VersionedEngine(ToyEngine(engine_model, logits_dtype=engine_logits_dtype))
    trainer = DecoupledPPOTrainer(
        policy,
        torch.optim.Adam(policy.parameters(), lr=lr),
        forward=lambda ids_BT, attn_BT: policy(ids_BT),
        pad_id=PAD_ID,
        loss_cfg=loss_cfg or PolicyLossConfig(level="token"),
        correction=correction or MismatchConfig(method="tis"),
    )
    return AsyncRLScheduler(
        cfg,
        tasks=toy_tasks(tasks),
        engine=engine,
        sync=WeightSync(engine, InProcessBackend(engine_model), timeout_s=60),
        envs=EnvironmentPool({"toy": ToyEnvironment()}, max_workers=env_workers, latency=latency, seed=cfg.seed),
        trainer=trainer,
        reward_fn=toy_reward,
        checkpoint_dir=checkpoint_dir,
    )
