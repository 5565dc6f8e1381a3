"""Run a function on N local processes under torchrun, and end the workers safely.

    python -m training.launch --nproc 2 package.module:function [args ...]

starts ``torchrun --standalone --nproc_per_node 2 -m training.launch --worker package.module:function
[args ...]``; every worker calls ``function(args)`` (a list of strings; the function reads its rank from
the environment torchrun sets, or from the engine it builds). ``--standalone`` rendezvouses on a free
local port, so parallel launches do not collide.

Workers end with ``destroy_process_group()`` and then ``os._exit``: two-process gloo runs can crash in
interpreter teardown after a successful run (ARCHITECTURE §3), which would report success as failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import torch.distributed as dist

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_target(target: str) -> Callable[[list[str]], object]:
    """``"package.module:function"`` -> the function."""
    module_name, sep, function_name = target.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"target {target!r} is not of the form package.module:function")
    return getattr(importlib.import_module(module_name), function_name)


def worker_command(target: str, nproc: int, args: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "training.launch",
        "--worker",
        target,
        *args,
    ]


def run_distributed(
    target: str,
    nproc: int,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> None:
    """Run ``target(args)`` on ``nproc`` local workers; raises ``CalledProcessError`` if any fails.

    The workers inherit this process's environment plus ``env``, with the repository on PYTHONPATH.
    """
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), child_env.get("PYTHONPATH")) if p)
    subprocess.run(worker_command(target, nproc, args), env=child_env, timeout=timeout, check=True)


def leave_process_group() -> None:
    """End this worker's part in the process group; without it a successful two-process gloo run can
    crash in interpreter teardown (ARCHITECTURE §3)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def run_worker(target: str, args: Sequence[str]) -> NoReturn:
    """Inside one torchrun worker: call the target, then leave without interpreter teardown."""
    code = 0
    try:
        resolve_target(target)(list(args))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        log.exception("worker rank %s failed", os.environ.get("RANK", "?"))
        code = 1
    if code == 0:
        leave_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.launch", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--nproc", type=int, help="start this many local workers under torchrun")
    mode.add_argument("--worker", action="store_true", help="run as one worker (torchrun passes this)")
    parser.add_argument("target", help="package.module:function, called with the remaining arguments")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.worker:
        logging.basicConfig(
            level=logging.INFO, format=f"[rank {os.environ.get('RANK', '?')}] %(levelname)s %(name)s: %(message)s"
        )
        run_worker(ns.target, ns.args)
    try:
        run_distributed(ns.target, ns.nproc, ns.args)
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode)


if __name__ == "__main__":
    main()
