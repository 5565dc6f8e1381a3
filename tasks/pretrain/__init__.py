"""Pre-training stage: the Ling-2.0 base trained on the curated shards with DeepSpeed, WSM-annealed by
checkpoint merging, evaluated by the harness, exported in the official layout (or imported by path)."""
