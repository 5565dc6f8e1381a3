"""Publish stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``publishing.from_stages`` and
records."""
