"""Curation stage: ``task.STAGE`` declares it, ``report.run_recorded`` calls ``corpus.curation`` and records."""
