"""The graph: Flyte workflows and launch plans only; no torch at import time."""
