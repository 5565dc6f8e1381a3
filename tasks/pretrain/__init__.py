"""Pre-training stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``training.pretrain`` and
records."""
