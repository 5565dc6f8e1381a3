"""The code sandbox: limits hold, network and process creation are refused, normal code runs."""

from __future__ import annotations

import time

import pytest

from environments.sandbox import MAX_OUTPUT_CHARS, run_in_sandbox

LIMITS = {"timeout_s": 1.0, "memory_mb": 128}


def test_normal_code_runs_and_its_output_is_captured() -> None:
    result = run_in_sandbox(
        "import json\nprint(json.dumps([1, 2]))\nimport sys\nprint('note', file=sys.stderr)", **LIMITS
    )
    assert result.ok and result.status == "ok"
    assert result.stdout == "[1, 2]\n" and result.stderr == "note\n"


def test_it_runs_isolated_in_an_empty_directory_without_site_packages() -> None:
    code = "import os, sys\nprint(sorted(os.listdir('.')), dict(os.environ).get('HOME'), sys.flags.isolated, sys.flags.no_site)"
    result = run_in_sandbox(code, **LIMITS)
    assert result.stdout == "['main.py'] None 1 1\n"
    assert run_in_sandbox("import hypothesis", **LIMITS).status == "error"


def test_an_infinite_loop_is_killed_on_time() -> None:
    start = time.monotonic()
    result = run_in_sandbox("while True:\n    pass", **LIMITS)
    assert result.status == "timeout" and not result.ok
    assert time.monotonic() - start < 5


def test_a_sleeping_process_is_killed_by_the_wall_clock() -> None:
    result = run_in_sandbox("import time\ntime.sleep(30)", timeout_s=0.5, memory_mb=128)
    assert result.status == "timeout"


@pytest.mark.parametrize("code", ["x = bytearray(1 << 34)", "a = []\nwhile True:\n    a.append(bytes(10**6))"])
def test_a_memory_bomb_is_stopped(code: str) -> None:
    result = run_in_sandbox(code, **LIMITS)
    assert result.status == "memory" and "memory" in result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket()",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import _socket\n_socket.socket()",
        "import socket\ntry:\n    socket.socket()\nexcept BaseException:\n    print('escaped')",
        "import socket\ns = socket.SocketType()",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9')",
    ],
)
def test_network_access_is_blocked_and_cannot_be_caught(code: str) -> None:
    result = run_in_sandbox(code, **LIMITS)
    assert result.status == "blocked" and not result.ok
    assert "escaped" not in result.stdout and "blocked" in result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.fork()",
        "import os\nos.execv('/bin/true', ['true'])",
        "import os, signal\nos.kill(1, signal.SIGTERM)",
        "import ctypes",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
        # Disarming the audit hook by rewriting its defaults is itself refused.
        "import gc\nhook = [o for o in gc.get_objects() if getattr(o, '__name__', '') == '_audit'][0]\n"
        "hook.__defaults__ = (None, None)",
    ],
)
def test_process_creation_limit_changes_and_hook_tampering_are_blocked(code: str) -> None:
    assert run_in_sandbox(code, **LIMITS).status == "blocked"


def test_errors_and_output_floods_are_reported_truncated() -> None:
    error = run_in_sandbox("raise ValueError('boom')", **LIMITS)
    assert error.status == "error" and "ValueError: boom" in error.stderr
    flood = run_in_sandbox("print('x' * 100000)", **LIMITS)
    assert flood.ok and len(flood.stdout) <= MAX_OUTPUT_CHARS + len("\n[output truncated]")
    assert flood.stdout.endswith("[output truncated]")
    assert run_in_sandbox("import sys\nsys.exit(3)", **LIMITS).status == "error"
