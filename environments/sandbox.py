"""Run untrusted Python (model-written code) isolated by the operating system.

The isolation in force is reported by ``sandbox_isolation()``; each result carries it too:

- ``"bwrap+seccomp"`` (the default, required unless weaker isolation is accepted): bubblewrap starts
  the program as uid/gid 65534 with no capabilities in fresh user, mount, PID, network, IPC, UTS and
  cgroup namespaces, as PID 1 of its namespace, so every process in the sandbox dies with it. Its
  filesystem is an empty read-only root holding only what the interpreter needs (the interpreter
  binary, its standard library, the system library directories), a minimal read-only ``/dev`` and one
  small writable tmpfs, ``/work``, holding ``main.py``: nothing of the host's home, ``/tmp``,
  repository or environment. There is no ``/proc`` at all: the programs need none, and where the
  trainer runs as root the sandbox's uid is root outside the namespaces, for which a procfs would open
  root-only kernel files (page flags, slab statistics). A seccomp filter (``environments/seccomp.py``)
  refuses new processes, non-Unix sockets, new namespaces, mounts, ptrace and cross-process memory,
  pidfds and other kernel surfaces;
- ``"bwrap"``: the same without the seccomp filter, where this architecture has no syscall table;
- ``"rlimits-only"``: a bare ``python -I -S`` child in a host temporary directory, for machines
  without bubblewrap or user namespaces. It protects against mistakes, not against hostile code (a
  program can read the trainer's files and ``/proc``), so it runs only when explicitly accepted
  (``allow_weak_isolation``, set by ``environments.sandbox_allow_weak_isolation``); otherwise the
  sandbox refuses with ``SandboxUnavailable`` naming what is missing.

In every mode the child first sets rlimits on itself (address space, CPU seconds, file size, no core
dumps, processes, open files) and installs an audit hook that ends it on sockets, process creation,
signals, ctypes, subinterpreters, limit changes or tampering with the hook: a second, in-process layer
that also gives ordinary mistakes a clear ``blocked`` status. Setting limits in the child rather than
in a ``preexec_fn`` keeps the launch a cheap vfork (a ``preexec_fn`` forces a full fork, ~50 ms from
a 1.5 GB trainer). Output comes back through pipes the parent reads with a size cap, so the program
has no path it could replace, and the verdict is the caller's, from that output alone. At the
wall-clock limit the program is killed (and with it the whole sandbox).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from environments.seccomp import SeccompUnsupported, build_filter, machine_arch

Status = Literal["ok", "error", "timeout", "memory", "blocked"]
Isolation = Literal["bwrap+seccomp", "bwrap", "rlimits-only"]
STRONG_ISOLATION: Isolation = "bwrap+seccomp"

# Exit codes the child uses to say why it stopped; anything else is the user's code's own exit code.
BLOCKED_EXIT = 86
MEMORY_EXIT = 87
MAX_OUTPUT_CHARS = 4000
# Bytes kept per stream: enough for MAX_OUTPUT_CHARS characters of any UTF-8 text.
MAX_OUTPUT_BYTES = MAX_OUTPUT_CHARS * 4
MAX_FILE_BYTES = 1 << 20
# The writable /work tmpfs lives in RAM; its size bounds what many small files could take.
WORK_BYTES = 8 << 20
MAX_PROCESSES = 64
MAX_OPEN_FILES = 64
SANDBOX_UID = 65534
# How long bwrap gets to reap the program it was told to kill before it is killed too.
KILL_GRACE_S = 2.0
WORK_DIR = "/work"
INSTALL_HINT = "install it with `apt-get install bubblewrap` (Debian/Ubuntu) or `dnf install bubblewrap`"
WEAK_HINT = "or accept weaker isolation explicitly with environments.sandbox_allow_weak_isolation=true"

# Runs first in the child; the user's program is read from main.py in the working directory. The
# audit hook reads nothing the user's code could rebind: its lists are constants of its own code and
# its functions are default arguments (rewriting defaults or code is itself denied). The byte written
# to fd {started_fd} tells the parent the sandbox is set up, so a failure before that point is the
# sandbox's own, never something the user's program could fake.
_BOOTSTRAP = """
import os, resource, sys

for _limit, _value in ((resource.RLIMIT_AS, {memory_bytes}), (resource.RLIMIT_CPU, {cpu_s}),
                       (resource.RLIMIT_FSIZE, {file_bytes}), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NPROC, {max_processes}), (resource.RLIMIT_NOFILE, {max_open_files})):
    resource.setrlimit(_limit, (_value, _value))

def _audit(event, args, _write=os.write, _exit=os._exit):
    if (
        event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                          "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.",
                          "resource.setrlimit", "resource.prlimit"))
        or (event == "import" and args[0] in ("_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters",
                                              "_interpreters", "_xxinterpchannels", "_interpchannels",
                                              "_interpqueues", "_posixshmem", "_testcapi", "_testinternalcapi"))
        or (event == "object.__setattr__" and args[1] in ("__code__", "__defaults__", "__kwdefaults__"))
    ):
        what = event + " " + args[0] if event == "import" else event
        _write(2, b"sandbox: blocked " + what.encode() + b" (no network, processes or limit changes)\\n")
        _exit({blocked_exit})

sys.addaudithook(_audit)
del _audit, _limit, _value

with open("main.py", encoding="utf-8") as _file:
    _source = _file.read()
os.write({started_fd}, b"1")
os.closerange(3, 1024)
try:
    exec(compile(_source, "main.py", "exec"), {{"__name__": "__main__"}})
except MemoryError:
    os.write(2, b"sandbox: memory limit exceeded\\n")
    os._exit({memory_exit})
"""


class SandboxUnavailable(RuntimeError):
    """The required isolation cannot run on this machine; the message names what is missing."""


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    status: Status
    stdout: str
    stderr: str
    isolation: Isolation


@dataclass(frozen=True, kw_only=True)
class _Finished:
    returncode: int
    stdout: bytes
    stderr: bytes
    started: bool
    timed_out: bool


def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _interpreter() -> str:
    """The real interpreter behind ``sys.executable``: a venv's ``python`` is only a symlink, and ``-I -S``
    needs nothing of the venv."""
    return os.path.realpath(sys.executable)


@functools.cache
def _filesystem_args() -> tuple[str, ...]:
    """bwrap arguments that expose, read-only, what the interpreter needs and nothing else."""
    exe = _interpreter()
    # The shared libpython (found through the binary's RPATH under LIBDIR), the stdlib and lib-dynload,
    # all of the base installation: a venv's own tree (its site-packages, the repository's) stays out.
    base = {"installed_base": sys.base_prefix, "base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    stdlib = sysconfig.get_paths(vars=base)
    python_dirs = {sysconfig.get_config_var("LIBDIR"), stdlib["stdlib"], stdlib["platstdlib"]}
    system_dirs = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/lib", "/lib64", "/lib32", "/libx32")
    args: list[str] = []
    bound: list[str] = []
    for path in system_dirs:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            bound.append(path)
    for path in sorted(os.path.realpath(p) for p in python_dirs if p and os.path.isdir(p)):
        if not any(path == b or path.startswith(b + "/") for b in bound):
            args += ["--ro-bind", path, path]
            bound.append(path)
    if not any(exe.startswith(b + "/") for b in bound):
        args += ["--ro-bind", exe, exe]
    # The dynamic loader's cache: without it, multiarch library directories are not searched.
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return tuple(args)


def _bwrap_argv(bwrap: str, *, seccomp_fd: int | None, main_fd: int, info_fd: int, bootstrap: str) -> list[str]:
    seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    return [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        # The program is PID 1 of its namespace, so everything in it dies with the program, and it is
        # bwrap's own child: bwrap reaps it. (bwrap's default reaper process is never reaped by bwrap;
        # each run would leave a zombie for init, or for the trainer where it is a container's PID 1.)
        "--as-pid-1",
        "--info-fd", str(info_fd),
        "--cap-drop", "ALL",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        *_filesystem_args(),
        "--dev", "/dev",
        "--size", str(WORK_BYTES), "--tmpfs", WORK_DIR,
        "--file", str(main_fd), f"{WORK_DIR}/main.py",
        # The root and /dev are tmpfs mounts bwrap creates; read-only, they cannot be filled.
        "--remount-ro", "/dev",
        "--remount-ro", "/",
        "--chdir", WORK_DIR,
        "--clearenv",
        "--setenv", "LC_ALL", "C.UTF-8",
        *seccomp,
        "--",
        _interpreter(), "-I", "-S", "-c", bootstrap,
    ]  # fmt: skip


@functools.cache
def _seccomp_filter() -> bytes | None:
    try:
        return build_filter()
    except SeccompUnsupported:
        return None


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start, for bwrap to read."""
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _bootstrap(*, timeout_s: float, memory_mb: int, started_fd: int) -> str:
    return _BOOTSTRAP.format(
        memory_bytes=memory_mb * 1024 * 1024,
        cpu_s=max(1, math.ceil(timeout_s)),
        file_bytes=MAX_FILE_BYTES,
        max_processes=MAX_PROCESSES,
        max_open_files=MAX_OPEN_FILES,
        blocked_exit=BLOCKED_EXIT,
        memory_exit=MEMORY_EXIT,
        started_fd=started_fd,
    )


def _launch_bwrap(bwrap: str, code: str, *, timeout_s: float, memory_mb: int, seccomp: bytes | None) -> _Finished:
    started_r, started_w = os.pipe()
    info_r, info_w = os.pipe()
    main_fd = _memfd("ling26-main.py", code.encode())
    seccomp_fd = _memfd("ling26-seccomp", seccomp) if seccomp is not None else None
    fds = [started_w, info_w, main_fd] + ([seccomp_fd] if seccomp_fd is not None else [])
    bootstrap = _bootstrap(timeout_s=timeout_s, memory_mb=memory_mb, started_fd=started_w)
    argv = _bwrap_argv(bwrap, seccomp_fd=seccomp_fd, main_fd=main_fd, info_fd=info_w, bootstrap=bootstrap)
    # An empty environment for bwrap too: nothing of the trainer's reaches the sandbox.
    return _run(argv, cwd=None, env={}, pass_fds=fds, started_r=started_r, info_r=info_r, timeout_s=timeout_s)


def _launch_rlimits_only(code: str, *, timeout_s: float, memory_mb: int) -> _Finished:
    with tempfile.TemporaryDirectory(prefix="ling26-sandbox-") as root:
        work = Path(root, "work")
        work.mkdir()
        (work / "main.py").write_text(code, encoding="utf-8")
        started_r, started_w = os.pipe()
        bootstrap = _bootstrap(timeout_s=timeout_s, memory_mb=memory_mb, started_fd=started_w)
        argv = [_interpreter(), "-I", "-S", "-c", bootstrap]
        return _run(
            argv, cwd=work, env={"LC_ALL": "C.UTF-8"}, pass_fds=[started_w], started_r=started_r, timeout_s=timeout_s
        )


def _run(
    argv: list[str],
    *,
    cwd: Path | None,
    env: dict[str, str],
    pass_fds: list[int],
    started_r: int,
    timeout_s: float,
    info_r: int | None = None,
) -> _Finished:
    """Start ``argv``, read its output with a cap until it ends or the deadline passes, then kill it.
    ``info_r`` is bwrap's ``--info-fd``, which names the sandboxed program's pid."""
    deadline = time.monotonic() + timeout_s
    extra = [info_r] if info_r is not None else []
    try:
        with subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
            start_new_session=True,
        ) as proc:
            for fd in pass_fds:
                os.close(fd)
            pass_fds = []
            assert proc.stdout is not None and proc.stderr is not None
            out, err = proc.stdout.fileno(), proc.stderr.fileno()
            streams = _drain({fd: bytearray() for fd in [out, err, started_r, *extra]}, deadline)
            try:
                returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                timed_out = False
            except subprocess.TimeoutExpired:
                if info_r is not None:
                    _kill_sandboxed_program(proc, streams[info_r])
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
                timed_out = True
    finally:
        for fd in [*pass_fds, started_r, *extra]:
            os.close(fd)
    return _Finished(
        returncode=returncode,
        stdout=bytes(streams[out]),
        stderr=bytes(streams[err]),
        started=streams[started_r] == b"1",
        timed_out=timed_out,
    )


def _kill_sandboxed_program(bwrap: subprocess.Popen, info: bytes) -> None:
    """SIGKILL the program bwrap reported on ``--info-fd`` (PID 1 of the sandbox, so all in it die), then
    let bwrap reap it and exit. Killing bwrap first would orphan the program: it would still die, by
    its parent-death signal, but as a zombie nobody of ours reaps."""
    try:
        pid = json.loads(info)["child-pid"]
        pidfd = os.pidfd_open(pid)
    except (ValueError, KeyError, TypeError, OSError):
        return
    try:
        # The pidfd pins one process; were the pid reused since bwrap reported it, its parent would differ.
        if _parent_of(pid) == bwrap.pid:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)
    with contextlib.suppress(subprocess.TimeoutExpired):
        bwrap.wait(timeout=KILL_GRACE_S)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _drain(streams: dict[int, bytearray], deadline: float) -> dict[int, bytearray]:
    """Read every pipe until end of file or the deadline, keeping at most MAX_OUTPUT_BYTES + 1 of each."""
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fd)
                # Past the cap the pipe is still drained, so a flood cannot block the program.
                kept = streams[key.fd]
                kept += chunk[: MAX_OUTPUT_BYTES + 1 - len(kept)]
    return streams


@functools.cache
def _bwrap_problem(bwrap: str) -> str | None:
    """Why ``bwrap`` cannot run the sandbox here (None if it can), found by running an empty program once."""
    finished = _launch_bwrap(bwrap, "", timeout_s=10.0, memory_mb=256, seccomp=_seccomp_filter())
    if finished.started and finished.returncode == 0:
        return None
    detail = _text(finished.stderr).strip().splitlines() or [f"exit status {finished.returncode}"]
    return (
        f"bubblewrap ({bwrap}) cannot create the sandbox here: {detail[-1]}. It needs unprivileged user "
        "namespaces (sysctl user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 on Debian "
        "kernels; on Ubuntu 24.04+ an AppArmor profile that allows bwrap to use them)"
    )


def sandbox_isolation(*, allow_weak_isolation: bool = False) -> Isolation:
    """The isolation ``run_in_sandbox`` uses on this machine, for stages to record (e.g. in MLflow).

    ``"bwrap+seccomp"`` when bubblewrap works and a seccomp table exists for this architecture. Anything
    weaker is returned only with ``allow_weak_isolation``; without it this raises ``SandboxUnavailable``
    saying what is missing and how to get it. The first call on a machine runs one empty sandbox (tens
    of milliseconds); the answer is cached.
    """
    bwrap = _bwrap_path()
    if bwrap is None:
        problem = f"the code sandbox needs bubblewrap (`bwrap`), which is not on PATH: {INSTALL_HINT}"
    else:
        problem = _bwrap_problem(bwrap)
    if problem is None:
        if _seccomp_filter() is not None:
            return STRONG_ISOLATION
        if allow_weak_isolation:
            return "bwrap"
        raise SandboxUnavailable(
            f"the code sandbox has no seccomp syscall table for this architecture ({machine_arch()}); {WEAK_HINT}"
        )
    if allow_weak_isolation:
        return "rlimits-only"
    raise SandboxUnavailable(f"{problem}; {WEAK_HINT}")


def _text(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    if len(data) > MAX_OUTPUT_BYTES or len(text) > MAX_OUTPUT_CHARS:
        return text[:MAX_OUTPUT_CHARS] + "\n[output truncated]"
    return text


def _signal_of(returncode: int, isolation: Isolation) -> int | None:
    """The signal that ended the program: Popen reports it as ``-N``, bwrap's reaper exits with ``128 + N``."""
    if returncode < 0:
        return -returncode
    if isolation != "rlimits-only" and returncode > 128:
        return returncode - 128
    return None


def _status(finished: _Finished, stderr: str, isolation: Isolation) -> Status:
    if finished.timed_out:
        return "timeout"
    if finished.returncode == 0:
        return "ok"
    if finished.returncode == BLOCKED_EXIT:
        return "blocked"
    if finished.returncode == MEMORY_EXIT or "MemoryError" in stderr:
        return "memory"
    if _signal_of(finished.returncode, isolation) in (signal.SIGXCPU, signal.SIGKILL):
        return "timeout"
    return "error"


def run_in_sandbox(code: str, *, timeout_s: float, memory_mb: int, allow_weak_isolation: bool = False) -> SandboxResult:
    """Run ``code`` as a program in the sandbox and report how it ended, with its (truncated) output.

    Raises ``SandboxUnavailable`` when the required isolation cannot run here (see ``sandbox_isolation``),
    or when the sandbox failed to start, which is never the program's doing."""
    isolation = sandbox_isolation(allow_weak_isolation=allow_weak_isolation)
    if isolation == "rlimits-only":
        finished = _launch_rlimits_only(code, timeout_s=timeout_s, memory_mb=memory_mb)
    else:
        bwrap = _bwrap_path()
        assert bwrap is not None
        seccomp = _seccomp_filter() if isolation == STRONG_ISOLATION else None
        finished = _launch_bwrap(bwrap, code, timeout_s=timeout_s, memory_mb=memory_mb, seccomp=seccomp)
    stdout, stderr = _text(finished.stdout), _text(finished.stderr)
    if not finished.started and not finished.timed_out:
        detail = stderr.strip().splitlines() or [f"exit status {finished.returncode}"]
        raise SandboxUnavailable(f"the code sandbox ({isolation}) failed to start: {detail[-1]}")
    status = _status(finished, stderr, isolation)
    return SandboxResult(ok=status == "ok", status=status, stdout=stdout, stderr=stderr, isolation=isolation)
