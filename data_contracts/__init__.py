"""Contracts at every stage boundary: pandera models (row shape), great-expectations suites (table
properties), and the quarantine ledger that keeps every rejected row with its rule."""

from data_contracts.expectations import ExpectationsFailed, SuiteReport, validate_table, validate_tables
from data_contracts.quarantine import (
    ContractViolation,
    IntakeResult,
    QuarantineLedger,
    drop_and_quarantine,
    screen_documents,
)
from data_contracts.schemas import (
    CandidateResponse,
    EvalResult,
    PreferencePair,
    PretrainDocument,
    PromptRow,
    QuarantineRow,
    SFTExample,
)

__all__ = [
    "CandidateResponse",
    "ContractViolation",
    "EvalResult",
    "ExpectationsFailed",
    "IntakeResult",
    "PreferencePair",
    "PretrainDocument",
    "PromptRow",
    "QuarantineLedger",
    "QuarantineRow",
    "SFTExample",
    "SuiteReport",
    "drop_and_quarantine",
    "screen_documents",
    "validate_table",
    "validate_tables",
]
