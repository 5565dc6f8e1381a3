"""The evaluation stage's config: what every checkpoint is measured on (``evals.compare``), the long-context
retrieval grid (``evals.long_context``), lm-evaluation-harness tasks (``evals.lm_eval_task``) and the gate
a checkpoint must pass before it is published (``evals.gate``).

Defaults are the tiny profile; ``scale_evaluate()`` is the GPU-cluster one.
"""

from __future__ import annotations

import dataclasses

from configs.base import ConfigError, config
from configs.data import ENVIRONMENT_FAMILIES

# Families a per-family threshold may name: each environment family, and "all" (every prompt).
GATE_FAMILIES = (*ENVIRONMENT_FAMILIES, "all")


def _tiny_minimum() -> dict[str, float]:
    # Every family listed (0.0 is a minimum nothing fails), so that an override such as
    # ``evaluate.gate.min_accuracy.math=0.4`` names an existing key, as dotted overrides must. The tiny
    # models answer about one prompt in five (BENCHMARKS.md, post-training); one in twenty over every
    # prompt is the floor a working checkpoint clears and a broken one (noise on its weights: 0) does not.
    return {**dict.fromkeys(GATE_FAMILIES, 0.0), "all": 0.05}


@config
class EvalGateConfig:
    """Thresholds a checkpoint must meet; ``None`` turns a check off. Rates are fractions in [0, 1]."""

    # Greedy accuracy per family.
    min_accuracy: dict[str, float] = dataclasses.field(default_factory=_tiny_minimum)
    # Share of greedy answers in the shared format, over every prompt (the tiny models keep it near 1).
    min_format_rate: float | None = 0.5
    # Mean model tokens per correct greedy answer, over every prompt: the capability-per-token budget
    # (the tiny post-trained model spends ~24; a checkpoint that doubled it has lost the instant behaviour).
    max_tokens_per_correct: float | None = 48.0
    # Success rate over the multi-turn tool families together (family "agentic").
    min_agentic_success: float | None = None
    # Largest accuracy drop against the previous checkpoint, per family both were measured on. With 8
    # prompts per family one prompt is 0.125: the tiny default lets two prompts move either way as noise.
    max_accuracy_regression: float | None = 0.25
    # Largest held-out loss increase (nats) against the previous checkpoint: RL and distillation should
    # not unlearn the language model (a noised checkpoint loses several nats).
    max_heldout_loss_regression: float | None = 0.5

    def __post_init__(self) -> None:
        unknown = sorted(set(self.min_accuracy) - set(GATE_FAMILIES))
        if unknown:
            raise ConfigError(f"evaluate.gate.min_accuracy: unknown family {unknown[0]!r} (known: {GATE_FAMILIES})")
        rates = {f"min_accuracy.{k}": v for k, v in self.min_accuracy.items()}
        rates.update(min_format_rate=self.min_format_rate, min_agentic_success=self.min_agentic_success)
        for key, value in rates.items():
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"evaluate.gate.{key} must be a rate in [0, 1], got {value}")
        for key in ("max_tokens_per_correct", "max_accuracy_regression", "max_heldout_loss_regression"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"evaluate.gate.{key} must be >= 0, got {value}")


@config
class RetrievalConfig:
    """The passkey grid: every length (prompt tokens) x every depth (0 = needle first, 1 = needle last)."""

    # Up to and beyond the tiny profile's pre-trained context (pretrain.loop.seq_len = 128), through the context
    # the migration extends it to (migrate.context_extension: 1024 = model.max_position_embeddings).
    lengths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    depths: tuple[float, ...] = (0.0, 0.5, 1.0)
    samples_per_cell: int = 2
    max_new_tokens: int = 12

    def __post_init__(self) -> None:
        if any(length < 1 for length in self.lengths):
            raise ConfigError(f"evaluate.retrieval.lengths must be positive token counts, got {self.lengths}")
        if any(not 0.0 <= depth <= 1.0 for depth in self.depths):
            raise ConfigError(f"evaluate.retrieval.depths must lie in [0, 1], got {self.depths}")
        if self.samples_per_cell < 1 or self.max_new_tokens < 1:
            raise ConfigError("evaluate.retrieval.samples_per_cell and max_new_tokens must be >= 1")


@config
class LmEvalConfig:
    """lm-evaluation-harness runs. Public tasks download their datasets, so the tiny profile names none."""

    tasks: tuple[str, ...] = ()
    # Documents per task (None = all); few-shot examples (None = the task's default).
    limit: int | None = 16
    num_fewshot: int | None = None
    batch_size: int = 8
    # Our own held-out set as a local lm_eval task (generate_until + loglikelihood), needing no download.
    local_task: bool = True
    max_gen_toks: int = 96

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"evaluate.lm_eval.limit must be >= 1 or null, got {self.limit}")
        if self.batch_size < 1 or self.max_gen_toks < 1:
            raise ConfigError("evaluate.lm_eval.batch_size and max_gen_toks must be >= 1")


@config
class EvaluateConfig:
    prompts_per_family: int = 8
    max_new_tokens: int = 64
    max_tool_turns: int = 4
    # pass@k for each k, estimated without bias from samples_per_prompt samples per prompt (k <= samples).
    pass_k: tuple[int, ...] = (1, 4)
    samples_per_prompt: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    # Every checkpoint is sampled with this seed: same prompts, same sampling, same seeds.
    seed: int = 0
    # Held-out loss on this many non-overlapping windows of this many tokens (the trained context).
    heldout_windows: int = 32
    heldout_seq_len: int = 128
    retrieval: RetrievalConfig = RetrievalConfig()
    lm_eval: LmEvalConfig = LmEvalConfig()
    gate: EvalGateConfig = EvalGateConfig()

    def __post_init__(self) -> None:
        if self.prompts_per_family < 1 or self.max_new_tokens < 1 or self.max_tool_turns < 0:
            raise ConfigError("evaluate: prompts_per_family and max_new_tokens must be >= 1, max_tool_turns >= 0")
        if any(k < 1 for k in self.pass_k):
            raise ConfigError(f"evaluate.pass_k must be >= 1, got {self.pass_k}")
        if self.pass_k and max(self.pass_k) > self.samples_per_prompt:
            raise ConfigError(
                f"evaluate.pass_k {max(self.pass_k)} needs at least that many samples per prompt "
                f"(samples_per_prompt={self.samples_per_prompt}): raise samples_per_prompt or lower k"
            )
        if self.temperature <= 0 and self.pass_k:
            raise ConfigError("evaluate.temperature must be > 0 for pass@k: greedy samples are all the same")
        if self.heldout_windows < 1 or self.heldout_seq_len < 1:
            raise ConfigError("evaluate.heldout_windows and heldout_seq_len must be >= 1")


def scale_evaluate() -> EvaluateConfig:
    """The GPU-cluster evaluation: more prompts and samples, retrieval out to 256K tokens (the paper profiles'
    extended context, ``migrate.context_extension``), public benchmarks."""
    return EvaluateConfig(
        prompts_per_family=500,
        max_new_tokens=4096,
        pass_k=(1, 8, 32),
        samples_per_prompt=32,
        heldout_seq_len=4096,
        retrieval=RetrievalConfig(lengths=(4096, 16384, 32768, 65536, 131072, 262144), samples_per_cell=16),
        lm_eval=LmEvalConfig(tasks=("gsm8k", "mmlu"), limit=None, batch_size=32),
        # At 500 prompts per family a rate's standard error is at most ~0.022: a 3-point drop is a regression,
        # not noise. Absolute floors depend on the model and stay off until a release sets them.
        gate=EvalGateConfig(
            min_accuracy=dict.fromkeys(GATE_FAMILIES, 0.0),
            min_format_rate=0.9,
            max_tokens_per_correct=None,
            max_accuracy_regression=0.03,
            max_heldout_loss_regression=0.05,
        ),
    )
