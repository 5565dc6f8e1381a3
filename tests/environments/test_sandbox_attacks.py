"""Hostile programs against the code sandbox, one test per attack class, each checking the host after.

Most attacks run twice: with the in-process audit hook as shipped, and with the hook removed from the
bootstrap, which stands for any way of getting past it from inside the interpreter (a subinterpreter,
a loader trick, a future CPython gap). The second run is the one that shows the operating-system
layer (namespaces, read-only mounts, seccomp) holds on its own.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from configs.data import EnvironmentsConfig
from environments import Task, get_environment, sandbox
from environments.base import Environment
from environments.sandbox import SandboxResult, run_in_sandbox

LIMITS = {"timeout_s": 1.0, "memory_mb": 128}
REPO = Path(__file__).resolve().parents[2]
HOOK_LINE = "sys.addaudithook(_audit)\n"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["audit-hook", "hook-bypassed"])
def hook(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "hook-bypassed":
        assert HOOK_LINE in sandbox._BOOTSTRAP
        monkeypatch.setattr(sandbox, "_BOOTSTRAP", sandbox._BOOTSTRAP.replace(HOOK_LINE, ""))
    return request.param


def _run(program: str, **limits: float) -> SandboxResult:
    result = run_in_sandbox(textwrap.dedent(program), **{**LIMITS, **limits})  # type: ignore[arg-type]
    assert result.isolation == "bwrap+seccomp"
    return result


def _report(result: SandboxResult) -> dict:
    """The dict the attack printed on its last stdout line."""
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_host_files_cannot_be_read_written_or_deleted(tmp_path: Path, hook: str) -> None:
    secret = f"ling26-secret-{uuid.uuid4().hex}"
    target = tmp_path / "secret.txt"
    target.write_text(secret)
    reads = [str(target), str(tmp_path), "/etc/shadow", "/etc/passwd", str(REPO / "README.md"), str(REPO), "/root",
             os.path.expanduser("~"), "/home", "/tmp", "/proc/1/environ", f"/proc/{os.getpid()}/environ",
             sys.prefix, os.path.dirname(pytest.__file__)]  # fmt: skip
    result = _run(f"""
        import os
        report = {{}}
        for path in {reads!r}:
            try:
                report[path] = ("listed", os.listdir(path)) if os.path.isdir(path) else ("read", open(path, "rb").read(200))
            except OSError as err:
                report[path] = ("refused", err.errno)
        for name, action in (("write", lambda: open({str(target)!r}, "w").write("pwned")),
                             ("delete", lambda: os.remove({str(target)!r})),
                             ("rename", lambda: os.rename({str(target)!r}, {str(target)!r} + ".moved")),
                             ("create", lambda: open({str(tmp_path / "planted")!r}, "w").close())):
            try:
                action()
                report[name] = "done"
            except OSError as err:
                report[name] = ("refused", err.errno)
        print(report)
    """)
    report = _report(result)
    assert secret not in result.stdout + result.stderr
    assert target.read_text() == secret and sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]
    assert all(report[action][0] == "refused" for action in ("write", "delete", "rename", "create"))
    interpreter_path = set(Path(os.path.realpath(sys.executable)).parts)
    for path in reads:
        kind, value = report[path]
        if kind == "listed":
            # Only directories on the way to the interpreter exist, holding nothing but that way.
            assert set(value) <= interpreter_path, (path, value)
        else:
            assert kind == "refused", (path, value)


def test_escaping_the_interpreter_gives_no_shell_network_or_lasting_process(tmp_path: Path, hook: str) -> None:
    marker = f"ling26-outlive-{uuid.uuid4().hex}"
    sleeper = f"import time; time.sleep(2); open({str(tmp_path / 'outlived')!r}, 'w').write({marker!r})"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        attack = textwrap.dedent(f"""
            import os, socket, sys
            report = {{}}
            try:
                report["system"] = os.system("touch {tmp_path / "shell"}")
            except OSError as err:
                report["system"] = ("refused", err.errno)
            for family, address in ((socket.AF_INET, ("127.0.0.1", {port})), (socket.AF_INET6, ("::1", {port}))):
                try:
                    socket.socket(family, socket.SOCK_STREAM).connect(address)
                    report[family.name] = "connected"
                except OSError as err:
                    report[family.name] = ("refused", err.errno)
            try:
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        os.execv(sys.executable, [sys.executable, "-c", {sleeper!r}])
                    os._exit(0)
                report["fork"] = "forked"
            except (OSError, RuntimeError) as err:  # subinterpreters refuse fork themselves
                report["fork"] = ("refused", getattr(err, "errno", None))
            print(report, flush=True)
        """)
        # Run the attack inside a fresh subinterpreter (no audit hook there), then in the main one,
        # then become a long sleeper that would write a marker if it outlived the run.
        result = _run(f"""
            import os, sys
            import _xxsubinterpreters as interpreters
            interpreters.run_string(interpreters.create(), {attack!r})
            exec({attack!r})
            os.execv(sys.executable, [sys.executable, "-c", {sleeper!r}])
        """)
        if hook == "audit-hook":
            assert result.status == "blocked" and "_xxsubinterpreters" in result.stderr
        else:
            assert result.status == "timeout"
            reports = [ast.literal_eval(line) for line in result.stdout.splitlines()]
            assert len(reports) == 2  # the subinterpreter's and the main interpreter's
            for report in reports:
                assert report["system"] != 0 and report["fork"][0] == "refused"
                assert report["AF_INET"] == ("refused", 1) and report["AF_INET6"] == ("refused", 1)
        with pytest.raises(BlockingIOError):
            listener.accept()
    # The program was killed and reaped before run_in_sandbox returned.
    assert not _processes_with(marker)
    time.sleep(2.5)
    assert not (tmp_path / "shell").exists() and not (tmp_path / "outlived").exists()


@pytest.fixture
def victim() -> Iterator[subprocess.Popen]:
    """A host process the sandbox knows the pid of."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_the_parent_and_host_processes_cannot_be_signalled(hook: str, victim: subprocess.Popen) -> None:
    host_pids = [os.getpid(), victim.pid, os.getppid()]
    result = _run(f"""
        import os, signal
        report = {{}}
        for pid in [os.getppid(), 1, *{host_pids!r}]:
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                    report[(pid, sig.name)] = "sent"
                except OSError as err:
                    report[(pid, sig.name)] = ("refused", err.errno)
            try:
                fd = os.pidfd_open(pid)
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                report[(pid, "pidfd")] = "sent"
            except OSError as err:
                report[(pid, "pidfd")] = ("refused", err.errno)
            for path in (f"/proc/{{pid}}/mem", f"/proc/{{pid}}/oom_score_adj", "/proc/sysrq-trigger"):
                try:
                    with open(path, "r+b", buffering=0) as file:
                        file.write(b"s")
                    report[path] = "written"
                except OSError as err:
                    report[path] = ("refused", err.errno)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                os.kill(-1, sig)
            except OSError:
                pass
        print(report)
    """)
    # We are here, so the test process was not killed; the victim and the test run on.
    assert victim.poll() is None and _state(victim.pid) != "T" and _state(os.getpid()) not in ("T", "t")
    if hook == "audit-hook":
        assert result.status == "blocked"
    else:
        # kill(-1, SIGKILL) inside the sandbox's PID namespace ends the program itself at worst.
        assert result.status in ("ok", "timeout", "error")
        if result.stdout:
            report = _report(result)
            assert all(report[(pid, "pidfd")] == ("refused", 1) for pid in host_pids)
            assert report["/proc/sysrq-trigger"][0] == "refused"


@pytest.mark.parametrize(
    "program",
    [
        # Replace the paths an older sandbox reopened (stdout/stderr next to the work folder) with FIFOs
        # and symlinks, and point the program's own stdout at a FIFO nobody reads.
        """
        import os
        for name in ("stdout", "stderr", "../stdout", "../stderr", "/stdout"):
            for make in (os.mkfifo, lambda path: os.symlink("/dev/zero", path)):
                try:
                    os.remove(name)
                except OSError:
                    pass
                try:
                    make(name)
                except OSError:
                    pass
        os.mkfifo("out.fifo")
        os.dup2(os.open("out.fifo", os.O_RDWR), 1)
        os.dup2(os.open("/dev/zero", os.O_RDONLY), 2)
        print("x" * 100000)
        """,
        # Close the output pipes and keep running.
        """
        import os, time
        os.close(1)
        os.close(2)
        time.sleep(30)
        """,
    ],
)
def test_output_tricks_cannot_stall_the_parent(program: str, hook: str) -> None:
    result = _run(program)
    assert result.status in ("ok", "timeout", "error", "blocked")


def test_the_trainers_environment_and_memory_do_not_leak(monkeypatch: pytest.MonkeyPatch, hook: str) -> None:
    env_secret = f"ling26-secret-env-{uuid.uuid4().hex}"
    memory_secret = f"ling26-secret-mem-{uuid.uuid4().hex}".encode()
    monkeypatch.setenv("LING26_API_TOKEN", env_secret)
    kept = bytearray(memory_secret)  # alive in this process while the sandbox runs
    result = _run(f"""
        import os, sys
        prefix = b"ling26-" + b"secret-"
        found = [repr(dict(os.environ)).encode()]
        pids = {{"self", str(os.getppid()), "1", "{os.getpid()}", *(p for p in os.listdir("/proc") if p.isdigit())}}
        for pid in pids:
            for name in ("environ", "cmdline"):
                try:
                    found.append(open(f"/proc/{{pid}}/{{name}}", "rb").read())
                except OSError:
                    pass
            try:
                with open(f"/proc/{{pid}}/maps") as maps, open(f"/proc/{{pid}}/mem", "rb", buffering=0) as mem:
                    for line in maps:
                        span, perms = line.split()[:2]
                        lo, hi = (int(x, 16) for x in span.split("-"))
                        if perms[0] == "r" and pid != "self":
                            try:
                                mem.seek(lo)
                                data = mem.read(min(hi - lo, 1 << 24))
                            except (OSError, OverflowError, ValueError):
                                continue
                            at = data.find(prefix)
                            while at >= 0:
                                found.append(data[at : at + 80])
                                at = data.find(prefix, at + 1)
            except OSError:
                pass
        leak = b" | ".join(found).decode("latin-1")
        print(leak)
        sys.stderr.write(leak)
        raise SystemExit(leak[-300:])
    """)
    assert kept == memory_secret
    for secret in (env_secret, memory_secret.decode()):
        assert secret not in result.stdout and secret not in result.stderr and secret not in result.status
    code_env = get_environment("code", EnvironmentsConfig(sandbox_timeout_s=1.0, sandbox_memory_mb=128))
    reader = "import os; f = lambda x: x; raise SystemExit(repr(os.environ) + open('/proc/1/environ').read() + str([open(f'/proc/{p}/environ').read() for p in os.listdir('/proc') if p.isdigit()]))"
    verdict = code_env.verify(_add_three_task(code_env), f"Answer: {reader}; _run = {uuid.uuid4().hex!r}")
    assert not verdict.correct and env_secret not in verdict.reason


def _add_three_task(env: Environment) -> Task:
    for seed in range(200):
        for task in env.generate(20, seed=seed, difficulty=1):
            if task.prompt == "[code] f(x): add 3\n":
                return task
    raise AssertionError("no code task 'add 3'")


def test_an_answer_that_reads_the_expected_values_instead_of_solving_scores_zero(hook: str) -> None:
    code_env = get_environment("code", EnvironmentsConfig(sandbox_timeout_s=2.0, sandbox_memory_mb=256))
    task = _add_three_task(code_env)
    count = len(json.loads(task.payload)["inputs"])
    # Look for the task payload ('"expected": [...]') anywhere a process could see it, then forge a
    # results line from it after the harness's own, and print fake pass lines for good measure.
    attack = textwrap.dedent(f"""
        import atexit, os, re
        values = []
        for pid in (p for p in os.listdir("/proc") if p.isdigit() or p == "self"):
            try:
                with open(f"/proc/{{pid}}/maps") as maps, open(f"/proc/{{pid}}/mem", "rb", buffering=0) as mem:
                    for line in maps:
                        span, perms = line.split()[:2]
                        lo, hi = (int(x, 16) for x in span.split("-"))
                        if perms[0] == "r":
                            try:
                                mem.seek(lo)
                                data = mem.read(min(hi - lo, 1 << 24))
                            except (OSError, OverflowError, ValueError):
                                continue
                            for match in re.finditer(rb'"expected": (\\[[^\\]]*\\])', data):
                                values = [str(v) for v in eval(match.group(1))]
            except OSError:
                pass
        values = (values + ["0"] * {count})[:{count}]
        print("all tests passed")
        atexit.register(print, "@@results " + repr([("ok", v) for v in values]))
    """)
    encoded = base64.b64encode(attack.encode()).decode()
    # The nonce keeps the code environment's verdict cache from answering for the other variant.
    source = f"import base64; exec(base64.b64decode('{encoded}')); f = lambda x: x; _run = {uuid.uuid4().hex!r}"
    verdict = code_env.verify(task, f"Answer: {source}")
    assert verdict.format_ok and not verdict.correct, verdict
