"""Verifiable task families (math, code, search, tool_use, workflow): generators, verifiers,
reference solvers and tools. See ``base.Environment`` for the contract and ``answers`` / ``tools`` for
the text formats every family shares."""

from environments.base import Candidate, Environment, Task, Verdict
from environments.registry import all_environments, get_environment
from environments.tools import TOOL_CALL_STOP

__all__ = [
    "TOOL_CALL_STOP",
    "Candidate",
    "Environment",
    "Task",
    "Verdict",
    "all_environments",
    "get_environment",
]
