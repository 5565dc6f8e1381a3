"""great-expectations 1.x suites for the stage outputs, run directly (the flytekit GX plugin cannot
co-install with flytekit 1.16). pandera checks each row's shape; these suites check what a reviewer
asks of a whole table: row counts, uniqueness across columns, value sets, length and proportion bounds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from configs.data import RESPONSE_MAX_CHARS
from data_contracts.schemas import FAMILIES

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class ExpectationsFailed(ValueError):
    """A table failed its great-expectations suite; the message lists every failed expectation."""


@dataclass(frozen=True)
class SuiteReport:
    suite: str
    success: bool
    evaluated: int
    failed: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "success": self.success, "evaluated": self.evaluated, "failed": list(self.failed)}


def _suite_pretrain_documents(gxe: Any, *, min_chars: int, max_chars: int, **_: Any) -> list[Any]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="doc_id"),
        gxe.ExpectColumnValuesToBeUnique(column="doc_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=min_chars, max_value=max_chars),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "heldout"]),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "heldout"]),
    ]


def _suite_prompts(gxe: Any, **_: Any) -> list[Any]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="prompt_id"),
        gxe.ExpectColumnValuesToBeInSet(column="family", value_set=FAMILIES),
        gxe.ExpectColumnValuesToBeBetween(column="difficulty", min_value=1, max_value=5),
        gxe.ExpectColumnValuesToNotBeNull(column="answer"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1, max_value=4096),
    ]


def _suite_sft(gxe: Any, *, max_response_chars: int = RESPONSE_MAX_CHARS, **_: Any) -> list[Any]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="prompt_id"),
        gxe.ExpectColumnValuesToBeInSet(column="correct", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="style", value_set=["short", "cot", "verbose"]),
        gxe.ExpectColumnValueLengthsToBeBetween(column="response", min_value=1, max_value=max_response_chars),
        gxe.ExpectColumnValuesToBeInSet(column="family", value_set=FAMILIES),
    ]


def _suite_candidates(gxe: Any, **_: Any) -> list[Any]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=2),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["prompt_id", "candidate_idx"]),
        gxe.ExpectColumnValueLengthsToBeBetween(column="response", min_value=1, max_value=RESPONSE_MAX_CHARS),
        # Shortest-correct selection and preference pairs need both correct and wrong candidates.
        gxe.ExpectColumnMeanToBeBetween(column="correct", min_value=0.05, max_value=0.95),
    ]


def _suite_preferences(gxe: Any, *, max_response_chars: int = RESPONSE_MAX_CHARS, **_: Any) -> list[Any]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="chosen", min_value=1, max_value=max_response_chars),
        gxe.ExpectColumnValueLengthsToBeBetween(column="rejected", min_value=1, max_value=max_response_chars),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="chosen_reward", column_B="rejected_reward"),
        gxe.ExpectColumnValuesToBeInSet(column="chosen_verified", value_set=[True]),
    ]


def _suite_shards(gxe: Any, **_: Any) -> list[Any]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=2),
        gxe.ExpectColumnValuesToBeUnique(column="file"),
        gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "heldout"]),
    ]


SUITES: dict[str, Callable[..., list[Any]]] = {
    "pretrain_documents": _suite_pretrain_documents,
    "prompts": _suite_prompts,
    "sft": _suite_sft,
    "candidates": _suite_candidates,
    "preferences": _suite_preferences,
    "shards": _suite_shards,
}


def validate_table(frame: pd.DataFrame, suite: str, *, table: str | None = None, **params: Any) -> SuiteReport:
    """Run suite ``suite`` on ``frame`` with an ephemeral GX context; raise ``ExpectationsFailed`` on failure."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    name = table or suite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas(f"ling26_{name}")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe(f"{name}_whole")
    )
    expectation_suite = context.suites.add(gx.ExpectationSuite(name=f"ling26.{suite}"))
    for expectation in SUITES[suite](gxe, **params):
        expectation_suite.add_expectation(expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(expectation_suite)
    failed = tuple(_describe(r) for r in result.results if not r.success)
    report = SuiteReport(
        suite=f"ling26.{suite}", success=bool(result.success), evaluated=len(result.results), failed=failed
    )
    if not report.success:
        raise ExpectationsFailed(f"table {name!r} failed suite {report.suite}: " + "; ".join(failed))
    return report


def _describe(result: Any) -> str:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
    observed = (result.result or {}).get("observed_value")
    unexpected = (result.result or {}).get("partial_unexpected_list")
    extra = f", observed {observed!r}" if observed is not None else ""
    extra += f", e.g. {unexpected[:3]!r}" if unexpected else ""
    return f"{config.type}({kwargs}){extra}"


def validate_tables(tables: Sequence[tuple[str, pd.DataFrame, str, dict[str, Any]]]) -> list[SuiteReport]:
    """Validate several ``(table, frame, suite, params)`` at once, failing on the first bad table."""
    return [validate_table(frame, suite, table=table, **params) for table, frame, suite, params in tables]
