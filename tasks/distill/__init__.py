"""Distillation stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``training.distill`` and records."""
