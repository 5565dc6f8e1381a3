"""KPop RL stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``training.rl.run`` and records."""
