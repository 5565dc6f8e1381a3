"""Migration stage: the Ling-2.0 GQA base turned into the Lightning + MLA hybrid by METHODS §3's four steps
(Lightning conversion, linear warmup, QK-Norm fusion + partial training + TransMLA, MLA warmup), then continued
pre-training, measured against the base after every step and closed by a held-out-loss parity gate."""
