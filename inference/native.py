"""The native generation engine: batched, left-padded, KV-cached sampling with per-token logprobs.

It runs every architecture the project trains (the vLLM adapter covers those vLLM can run), and is the
rollout engine of every stage on CPU. Rows finish independently on EOS, a stop string, or the token
budget; finished rows stop being decoded. ``compiled_decode=True`` decodes through
``inference.compiled_decode.DecodeStep`` (the per-token fixed cost compiled; the prefill stays the model's
forward): worth its compile time (seconds per model) only for long generations.

Shape legend: B batch rows, T time, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from inference.sampling import Generation, SamplingParams, sample_next


class NativeEngine:
    def __init__(
        self, model: nn.Module, tokenizer, *, eos_id: int, pad_id: int, batch_size: int = 64,
        compiled_decode: bool = False,
    ):  # fmt: skip
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.batch_size = batch_size
        self._decode_step = None
        if compiled_decode:
            from inference.compiled_decode import DecodeStep

            self._decode_step = DecodeStep(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def generate(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams) -> list[Generation]:
        ids = [self.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        out: list[Generation] = []
        for start in range(0, len(ids), self.batch_size):
            out += self._generate_batch(ids[start : start + self.batch_size], params, row_offset=start)
        return out

    @torch.no_grad()
    def _generate_batch(self, prompt_ids: list[list[int]], params: SamplingParams, row_offset: int) -> list[Generation]:
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        was_training = self.model.training
        self.model.eval()
        device = self.device
        B, T = len(prompt_ids), max(len(p) for p in prompt_ids)
        input_BT = torch.full((B, T), self.pad_id, dtype=torch.long, device=device)
        mask_BT = torch.zeros((B, T), dtype=torch.long, device=device)
        for i, p in enumerate(prompt_ids):
            input_BT[i, T - len(p) :] = torch.tensor(p, device=device)
            mask_BT[i, T - len(p) :] = 1
        if self._decode_step is not None:
            self._decode_step.refresh()  # the weights may have been trained since the last batch
        generators = [torch.Generator().manual_seed(params.seed + row_offset + i) for i in range(B)]
        gens = [Generation(prompt_ids=list(p)) for p in prompt_ids]
        alive, done = list(range(B)), [False] * B
        out = self.model(input_BT, attention_mask=mask_BT, use_cache=True)
        cache, logits_BV = out.past_key_values, out.logits[:, -1].float()
        for _ in range(params.max_new_tokens):
            next_B = sample_next(logits_BV, params, [generators[i] for i in alive]).cpu()
            logp_BV = torch.log_softmax(logits_BV, dim=-1).cpu()
            for row, i in enumerate(alive):
                token = int(next_B[row])
                g = gens[i]
                if token == self.eos_id:
                    g.finish_reason, done[i] = "eos", True
                    continue
                g.token_ids.append(token)
                g.logprobs.append(float(logp_BV[row, token]))
                if params.stop:
                    # Decoded text, not tokens: a stop string can span or end inside a token.
                    g.text = self.decode(g.token_ids)
                    hit = next((s for s in params.stop if s in g.text), None)
                    if hit is not None:
                        g.finish_reason, g.stop_string, done[i] = "stop", hit, True
                done[i] = done[i] or len(g.token_ids) >= params.max_new_tokens
            still = [row for row, i in enumerate(alive) if not done[i]]
            if not still:
                break
            keep = torch.tensor(still, device=device)
            alive = [alive[row] for row in still]
            mask_BT = torch.cat([mask_BT[keep], torch.ones((len(still), 1), dtype=torch.long, device=device)], dim=1)
            cache = cache.select_rows(keep)
            step_BT = next_B[still].to(device)[:, None]
            if self._decode_step is not None:
                logits_BV = self._decode_step.step(step_BT, cache, mask_BT)[:, -1]
            else:
                out = self.model(step_BT, attention_mask=mask_BT, past_key_values=cache, use_cache=True)
                cache, logits_BV = out.past_key_values, out.logits[:, -1].float()
        for g in gens:
            g.text = self.decode(g.token_ids)
            if g.finish_reason == "stop" and g.stop_string:
                # Truncate after the stop string: a multi-character stop can end mid-token.
                cut = g.text.find(g.stop_string)
                g.text = g.text[: cut + len(g.stop_string)]
        self.model.train(was_training)
        return gens
