"""Evaluation stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``evals.run`` and records."""
