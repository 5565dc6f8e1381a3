"""The migration library (METHODS §3): the Ling-2.0 GQA base turned into the Lightning + MLA hybrid by the
four steps (Lightning conversion, linear warmup, QK-Norm fusion + partial training + TransMLA, MLA warmup),
then continued pre-training, measured against the base after every step and closed by the parity gate
(``evals.parity_gate``). ``run.run_migrate`` is what the migrate stage calls."""
