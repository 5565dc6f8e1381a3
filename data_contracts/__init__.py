"""Contracts at every stage boundary: pandera models (row shape), great-expectations suites (table
properties), and the quarantine ledger that keeps every rejected row with its rule (intake rules for
documents in ``quarantine``, for the rows post-training learns from in ``training_rows``, for the teacher
samples distillation learns from in ``teacher_logprobs``)."""

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
from data_contracts.teacher_logprobs import TeacherSample, screen_teacher_samples
from data_contracts.training_rows import NoRowsLeft, require_kept, screen_preference_pairs, screen_sft_rows

__all__ = [
    "CandidateResponse",
    "ContractViolation",
    "EvalResult",
    "ExpectationsFailed",
    "IntakeResult",
    "NoRowsLeft",
    "PreferencePair",
    "PretrainDocument",
    "PromptRow",
    "QuarantineLedger",
    "QuarantineRow",
    "SFTExample",
    "SuiteReport",
    "TeacherSample",
    "drop_and_quarantine",
    "require_kept",
    "screen_documents",
    "screen_preference_pairs",
    "screen_sft_rows",
    "screen_teacher_samples",
    "validate_table",
    "validate_tables",
]
