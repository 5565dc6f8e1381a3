"""``ling26`` / ``python -m workflows.cli``: run the pipeline through Flyte and say where its results are.

    python -m workflows.cli run --profile tiny_cpu --overrides 'curate.stdlib_max_files=50'
    python -m workflows.cli run --remote --profile ling26_flash    # on the Flyte cluster of flyte.config [platform]

The config is validated before Flyte starts, so a bad key fails in a second with its name. After a
local run it prints the MLflow parent run with each stage's nested run, and which stages were served
from Flyte's cache (a cached stage opens no nested run in this execution). ``--remote`` registers and launches
the profile's own workflow (``<profile>_pipeline``: its image, pods and torchrun shape, ``workflows.scale``)
through ``pyflyte run --remote``, which builds and pushes the task image where Docker can.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from configs import PROFILES, ConfigError, flatten
from lineage.paths import REPO_ROOT, dvc_remote_dir, stage_dir, state_dir, tracking_uri
from tasks.cli_common import add_config_arguments, config_from_args

WORKFLOW_FILE = "workflows/pipeline.py"
WORKFLOW_NAME = "ling26_pipeline"
FLYTE_CONFIG = REPO_ROOT / "flyte.config"


class RemoteUnavailable(RuntimeError):
    """``--remote`` cannot start: no cluster configured, or a value only a local run can take."""


def pyflyte_command(args: argparse.Namespace, overrides_text: str) -> list[str]:
    exe = Path(sys.executable).with_name("pyflyte")
    cmd = [str(exe), "--config", str(FLYTE_CONFIG), "run"]
    if args.remote:
        # The profile is part of the remote workflow (its pods and task types are compiled in), not an input.
        cmd += ["--remote", WORKFLOW_FILE, f"{args.profile_resolved}_pipeline", "--overrides", overrides_text]
        return cmd
    cmd += ["--raw-output-data-prefix", str(state_dir() / "flyte-raw")]
    cmd += [WORKFLOW_FILE, WORKFLOW_NAME, "--profile", args.profile_resolved, "--overrides", overrides_text]
    if args.extra_documents:
        cmd += ["--extra_documents", str(Path(args.extra_documents).resolve())]
    return cmd


def remote_endpoint(config_file: Path = FLYTE_CONFIG) -> str | None:
    """The Flyte admin endpoint flytekit would use: ``FLYTE_PLATFORM_URL``, else ``[platform] url`` of the file."""
    from flytekit.configuration.file import ConfigFile
    from flytekit.configuration.internal import Platform

    return Platform.URL.read(ConfigFile(str(config_file)))


def check_remote(args: argparse.Namespace, changed: dict) -> None:
    """Refuse a remote run that cannot do what it is asked, before anything is built or sent."""
    if not remote_endpoint():
        raise RemoteUnavailable(
            f"--remote needs a Flyte cluster: no endpoint is configured (set `url` under [platform] in {FLYTE_CONFIG}, "
            "with its [storage] section, or FLYTE_PLATFORM_URL); see README 'Running on a cluster'"
        )
    fixed = sorted(k for k in changed if k.startswith("cluster."))
    if fixed:
        raise RemoteUnavailable(
            f"{', '.join(fixed)}: a remote workflow's pods and torchrun shape are compiled from its profile "
            "(configs/cluster.py), so they cannot be overridden per run; change the profile instead"
        )
    if args.extra_documents:
        raise RemoteUnavailable(
            "--extra-documents names a file on this machine, which the cluster's pods cannot read; run locally"
        )


def report_local_run(started: float, experiment: str, configured_uri: str | None) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(configured_uri))
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    parents = (
        client.search_runs(
            [exp.experiment_id],
            "tags.`ling26.pipeline` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if exp
        else []
    )
    if not parents:
        print("no pipeline run found in MLflow")
        return
    parent = parents[0]
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "pipeline_summary.json")).read_text())
    print(f"\nMLflow parent run {parent.info.run_id} ({parent.info.run_name}, {parent.info.status})")
    for name, run_id in summary.get("stage_runs", {}).items():
        stage_parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId") if run_id else None
        if stage_parent == parent.info.run_id:
            print(f"  {name:10s} ran     -> nested run {run_id}")
        else:
            # A stage served from Flyte's cache does not execute: its outputs, and its report, are those of
            # the execution that computed them, whose nested run lies under an earlier parent.
            print(
                f"  {name:10s} cached  -> Flyte's cache served it; computed in MLflow run {run_id} "
                f"(parent {stage_parent})"
            )
    print(f"\nwall time {time.time() - started:.1f} s")
    print(f"MLflow UI:   make ui   (mlflow ui --backend-store-uri {tracking_uri(configured_uri)})")
    print(f"DVC remote:  {dvc_remote_dir()}   (dvc status; dvc status --cloud)")
    print(f"outputs:     {stage_dir('curate').parent}/<stage>/")


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    # The workflow receives the profile plus every value that differs from it (from params.yaml, --config
    # and --overrides alike), so the Flyte execution records the exact config it ran.
    profile_defaults = flatten(PROFILES[cfg.profile]())
    changed = {k: v for k, v in flatten(cfg).items() if profile_defaults.get(k) != v}
    overrides_text = json.dumps(changed, sort_keys=True) if changed else ""
    args.profile_resolved = cfg.profile
    if args.remote:
        try:
            check_remote(args, changed)
        except RemoteUnavailable as err:
            print(f"remote run refused: {err}", file=sys.stderr)
            return 2
    cmd = pyflyte_command(args, overrides_text)
    print("+", " ".join(cmd), flush=True)
    started = time.time()
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        print(f"pipeline failed (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    if not args.remote:
        report_local_run(started, cfg.lineage.experiment, cfg.lineage.tracking_uri)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ling26", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (locally unless --remote)")
    add_config_arguments(run)
    run.add_argument(
        "--remote", action="store_true", help="register and launch <profile>_pipeline on the cluster of flyte.config"
    )
    run.add_argument("--extra-documents", default="", help="JSONL/parquet of raw documents for curation")
    run.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
