"""Family name -> environment class, and constructors for the configured families."""

from __future__ import annotations

from configs.data import EnvironmentsConfig
from environments.arithmetic import ArithmeticEnvironment
from environments.base import Environment
from environments.code import CodeEnvironment
from environments.search import SearchEnvironment
from environments.tool_use import ToolUseEnvironment
from environments.workflow import WorkflowEnvironment

FAMILIES: dict[str, type[Environment]] = {
    cls.family: cls
    for cls in (ArithmeticEnvironment, CodeEnvironment, SearchEnvironment, ToolUseEnvironment, WorkflowEnvironment)
}


def get_environment(name: str, cfg: EnvironmentsConfig) -> Environment:
    if name not in FAMILIES:
        raise ValueError(f"unknown environment family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name](cfg)


def all_environments(cfg: EnvironmentsConfig) -> dict[str, Environment]:
    """One environment per family in ``cfg.families``, in that order."""
    return {name: get_environment(name, cfg) for name in cfg.families}
