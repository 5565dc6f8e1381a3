"""The one exception type for "a stage's own verdict says no": a parity gate, an evaluation gate, a
publishing gate. Stages raise a subclass after recording what they measured; ``python -m tasks`` prints it
and exits 1, and under Flyte the task fails, so nothing downstream consumes what was refused."""


class StageRefused(RuntimeError):
    """Raised by a gate; the message names each failed check, its value, the threshold and the gap."""
