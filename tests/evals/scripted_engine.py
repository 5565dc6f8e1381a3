"""An engine that writes given responses, one character per token, honouring stop strings the way
``NativeEngine`` does: the rollout loop, the environments' tool observations and the harness's scoring run
for real around it, so every count a test asserts is known by hand."""

from collections.abc import Mapping, Sequence

from inference.sampling import Generation, SamplingParams


class ScriptedEngine:
    """``script`` maps a prompt to the full response the engine writes after it (tool results included,
    as the environment will append them); an unknown prompt gets ``fallback``."""

    def __init__(self, script: Mapping[str, str], fallback: str = "Answer: 0") -> None:
        self.script = dict(script)
        self.fallback = fallback
        self.calls: list[SamplingParams] = []

    def encode(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)

    def _remaining(self, transcript: str) -> str:
        for prompt, response in self.script.items():
            if transcript.startswith(prompt):
                written = transcript[len(prompt) :]
                if not response.startswith(written):
                    raise AssertionError(f"transcript left the script: {written!r}")
                return response[len(written) :]
        return self.fallback

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        self.calls.append(params)
        out = []
        for ids in prompts:
            text = self._remaining(self.decode(ids))
            hits = [(text.find(s) + len(s), s) for s in params.stop if s in text]
            gen = Generation(prompt_ids=list(ids), finish_reason="eos")
            if hits:
                end, stop = min(hits)
                text, gen.finish_reason, gen.stop_string = text[:end], "stop", stop
            if len(text) >= params.max_new_tokens:
                text, gen.finish_reason, gen.stop_string = text[: params.max_new_tokens], "length", None
            gen.token_ids = self.encode(text)
            gen.logprobs = [0.0] * len(text)
            gen.text = text
            out.append(gen)
        return out
