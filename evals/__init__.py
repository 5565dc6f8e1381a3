"""The evaluation harness: per-family accuracy, tokens per (correct) answer, held-out loss."""
