"""Post-training stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``training.post_train`` and
records."""
