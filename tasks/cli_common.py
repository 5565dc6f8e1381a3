"""Config arguments shared by every ``python -m tasks <stage>`` entry point and the pipeline CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from configs import PROFILES, PipelineConfig, resolve
from lineage.paths import REPO_ROOT

PARAMS_FILE = REPO_ROOT / "params.yaml"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=None,
        choices=sorted(PROFILES),
        help="scale profile (default: params.yaml's, else tiny_cpu)",
    )
    parser.add_argument(
        "--overrides",
        default=None,
        help="dotted overrides, 'curate.stdlib_max_files=50 seed=7' or YAML '{curate: {stdlib_max_files: 50}}'",
    )
    parser.add_argument("--config", default=None, help="YAML file with any subset of the config's keys")


def params_defaults() -> tuple[str, dict]:
    """Profile and overrides recorded in params.yaml (DVC's params file)."""
    if not PARAMS_FILE.exists():
        return "tiny_cpu", {}
    params = yaml.safe_load(PARAMS_FILE.read_text()) or {}
    return params.get("profile", "tiny_cpu"), params.get("overrides") or {}


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    profile, overrides = params_defaults()
    if args.profile:
        profile = args.profile
    if args.overrides is not None:
        overrides = args.overrides
    config_file = str(Path(args.config)) if args.config else None
    return resolve(profile, overrides, config_file=config_file)
