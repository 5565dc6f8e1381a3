"""Contract counts as MLflow metrics, named the way ``publishing.collect`` reads them back for the card and
the publish gate: ``contracts.<table>.rows_in|rows_kept|rows_quarantined`` and
``contracts.<table>.quarantined.<rule>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNTS = ("rows_in", "rows_kept", "rows_quarantined")


def contract_metrics(contracts: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{table: {rows_in, rows_kept, rows_quarantined, quarantined_by_rule}}`` as flat metrics."""
    out = {}
    for table, counts in contracts.items():
        for key in COUNTS:
            out[f"contracts.{table}.{key}"] = float(counts[key])
        for rule, n in counts["quarantined_by_rule"].items():
            out[f"contracts.{table}.quarantined.{rule}"] = float(n)
    return out
