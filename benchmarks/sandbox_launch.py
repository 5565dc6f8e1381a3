"""Cost of one code-sandbox run per isolation mode, side by side (issue 10).

``rlimits-only`` is the sandbox as it was before issue 10 (a ``python -I -S`` child with rlimits and
the audit hook); ``bwrap`` adds the namespaces and read-only filesystem; ``bwrap+seccomp`` is what runs
by default. Each round runs the same tiny program once per mode, in turn, so machine load hits all
alike; the ratio is of medians against ``rlimits-only``. ``--parent-mb`` makes this process as large as
a trainer first, to show the launch stays a cheap vfork.

    python -m benchmarks.sandbox_launch --help
    python -m benchmarks.sandbox_launch --runs 40 --parent-mb 1500
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

PROGRAM = "print(sum(range(1000)))"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="runs per mode")
    parser.add_argument("--parent-mb", type=int, default=0, help="touch this much memory in the parent first")
    parser.add_argument("--timeout-s", type=float, default=2.0)
    parser.add_argument("--memory-mb", type=int, default=256)
    args = parser.parse_args(argv)

    from environments import sandbox

    ballast = bytearray(args.parent_mb << 20)
    ballast[:: 1 << 12] = b"\1" * len(ballast[:: 1 << 12])
    limits = {"timeout_s": args.timeout_s, "memory_mb": args.memory_mb}
    bwrap = sandbox._bwrap_path()
    modes = {"rlimits-only": lambda: sandbox._launch_rlimits_only(PROGRAM, **limits)}
    if bwrap is not None:
        modes["bwrap"] = lambda: sandbox._launch_bwrap(bwrap, PROGRAM, **limits, seccomp=None)
        modes["bwrap+seccomp"] = lambda: sandbox._launch_bwrap(
            bwrap, PROGRAM, **limits, seccomp=sandbox._seccomp_filter()
        )
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(args.runs + 1):
        for mode, launch in modes.items():
            start = time.perf_counter()
            finished = launch()
            elapsed = time.perf_counter() - start
            if finished.returncode != 0 or finished.stdout != b"499500\n":
                raise SystemExit(f"{mode}: the program did not run: {finished}")
            if round_:  # the first round warms caches (and the first bwrap start)
                seconds[mode].append(elapsed)
    base = statistics.median(seconds["rlimits-only"])
    table = {
        mode: {
            "median_ms": round(statistics.median(runs) * 1e3, 2),
            "p90_ms": round(sorted(runs)[int(0.9 * (len(runs) - 1))] * 1e3, 2),
            "vs_rlimits_only": round(statistics.median(runs) / base, 2),
        }
        for mode, runs in seconds.items()
    }
    result = {"runs": args.runs, "parent_mb": args.parent_mb, "modes": table}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
