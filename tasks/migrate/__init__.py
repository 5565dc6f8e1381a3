"""Migration stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``training.migrate`` and records."""
