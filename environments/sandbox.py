"""Run untrusted Python (model-written code) in a separate, limited interpreter.

Layers, each cheap, so that one gap does not open the box:
- a fresh ``python -I -S`` process (no site-packages, no user site, no PYTHON* variables, no cwd on
  ``sys.path``) in an empty temporary directory with an empty environment, in its own session;
- rlimits the child sets on itself before the user's code: address space (memory), CPU seconds, file
  size, no core dumps. Setting them in the child rather than in a ``preexec_fn`` keeps the launch a
  cheap vfork: a ``preexec_fn`` forces a full fork, which costs ~50 ms from a 1.5 GB parent such as
  a trainer verifying rollouts, against ~11 ms without;
- an audit hook, installed before the user's code and impossible to remove, that ends the process on
  any socket event (raised inside the C socket constructor, so ``_socket`` and every wrapper are
  covered), process creation, signal sending, ctypes, raising rlimits again, or rewriting the hook's
  own code or defaults; ending the process (rather than raising) means catching cannot get around it;
- a wall-clock limit; the whole process group is killed when it passes;
- stdout and stderr go to files (not pipes), and are read back truncated.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "error", "timeout", "memory", "blocked"]

# Exit codes the child uses to say why it stopped; anything else is the user's code's own exit code.
BLOCKED_EXIT = 86
MEMORY_EXIT = 87
MAX_OUTPUT_CHARS = 4000
MAX_FILE_BYTES = 1 << 20

# Runs first in the child; the user's program is read from main.py in the working directory. The
# audit hook reads nothing the user's code could rebind: its lists are constants of its own code and
# its functions are default arguments (rewriting defaults or code is itself denied).
_BOOTSTRAP = """
import os, resource, sys

for _limit, _value in ((resource.RLIMIT_AS, {memory_bytes}), (resource.RLIMIT_CPU, {cpu_s}),
                       (resource.RLIMIT_FSIZE, {file_bytes}), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(_limit, (_value, _value))

def _audit(event, args, _write=os.write, _exit=os._exit):
    if (
        event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                          "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.",
                          "resource.setrlimit", "resource.prlimit"))
        or (event == "import" and args[0] in ("_posixsubprocess", "_ctypes", "ctypes"))
        or (event == "object.__setattr__" and args[1] in ("__code__", "__defaults__", "__kwdefaults__"))
    ):
        what = event + " " + args[0] if event == "import" else event
        _write(2, b"sandbox: blocked " + what.encode() + b" (no network, processes or limit changes)\\n")
        _exit({blocked_exit})

sys.addaudithook(_audit)
del _audit, _limit, _value

with open("main.py", encoding="utf-8") as _file:
    _source = _file.read()
try:
    exec(compile(_source, "main.py", "exec"), {{"__name__": "__main__"}})
except MemoryError:
    os.write(2, b"sandbox: memory limit exceeded\\n")
    os._exit({memory_exit})
"""


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    status: Status
    stdout: str
    stderr: str


def _read(path: Path) -> str:
    with path.open("rb") as file:
        data = file.read(MAX_OUTPUT_CHARS * 4)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + "\n[output truncated]"


def _status(returncode: int, stderr: str) -> Status:
    if returncode == 0:
        return "ok"
    if returncode == BLOCKED_EXIT:
        return "blocked"
    if returncode == MEMORY_EXIT or "MemoryError" in stderr:
        return "memory"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    return "error"


def run_in_sandbox(code: str, *, timeout_s: float, memory_mb: int) -> SandboxResult:
    """Run ``code`` as a program in the sandbox and report how it ended, with its (truncated) output."""
    with tempfile.TemporaryDirectory(prefix="ling26-sandbox-") as root:
        work = Path(root, "work")
        work.mkdir()
        (work / "main.py").write_text(code, encoding="utf-8")
        out_path, err_path = Path(root, "stdout"), Path(root, "stderr")
        bootstrap = _BOOTSTRAP.format(
            memory_bytes=memory_mb * 1024 * 1024,
            cpu_s=max(1, math.ceil(timeout_s)),
            file_bytes=MAX_FILE_BYTES,
            blocked_exit=BLOCKED_EXIT,
            memory_exit=MEMORY_EXIT,
        )
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", bootstrap],
                cwd=work,
                env={"LC_ALL": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
                timed_out = True
        stdout, stderr = _read(out_path), _read(err_path)
    status: Status = "timeout" if timed_out else _status(returncode, stderr)
    return SandboxResult(ok=status == "ok", status=status, stdout=stdout, stderr=stderr)
