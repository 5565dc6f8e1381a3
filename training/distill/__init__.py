"""Specialist -> unified distillation (METHODS §6): teacher samples with top-k log-probs, logit and on-policy
distillation, the before/after comparison; ``run.run_distill`` is the stage."""
