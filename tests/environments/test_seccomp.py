"""The seccomp filter generator: the program assembles, decides as intended (checked with a small
classic-BPF interpreter over ``struct seccomp_data``), and the kernel enforces it inside the sandbox."""

from __future__ import annotations

import errno
import re
import struct
from pathlib import Path

import pytest

from environments import seccomp
from environments.sandbox import run_in_sandbox
from environments.seccomp import (
    ARCHES,
    CLONE_THREAD,
    DENIED,
    JEQ_K,
    JGE_K,
    JSET_K,
    LD_W_ABS,
    RET_ALLOW,
    RET_ERRNO,
    RET_K,
    RET_KILL_PROCESS,
    SeccompUnsupported,
    build_filter,
)

EPERM = RET_ERRNO | errno.EPERM
ENOSYS = RET_ERRNO | errno.ENOSYS
BPF_MAXINSNS = 4096
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND, CLONE_VFORK = 0x100, 0x200, 0x400, 0x800, 0x4000
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x00020000, 0x20000000, 0x40000000
SIGCHLD, AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 17, 1, 2, 10, 16
TIOCSTI, TCGETS = 0x5412, 0x5401
PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15
THREAD_FLAGS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD


def decide(program: bytes, *, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """What the kernel would return for this call: run the filter over a packed ``struct seccomp_data``."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(args + (0,) * (6 - len(args))))
    code = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    pc = acc = 0
    while True:
        op, jt, jf, k = code[pc]
        if op == RET_K:
            return k
        if op == LD_W_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
            continue
        taken = {JEQ_K: acc == k, JGE_K: acc >= k, JSET_K: bool(acc & k)}[op]
        pc += 1 + (jt if taken else jf)


@pytest.fixture(params=sorted(ARCHES))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


def _call(arch_name: str, name: str, *args: int) -> int:
    table = ARCHES[arch_name]
    return decide(build_filter(arch_name), arch=table.audit_arch, nr=table.numbers[name], args=args)


def test_the_program_assembles_into_whole_instructions_ending_in_a_return(arch: str) -> None:
    program = build_filter(arch)
    assert len(program) % 8 == 0 and 0 < len(program) // 8 <= BPF_MAXINSNS
    last = struct.unpack_from("=HBBI", program, len(program) - 8)
    assert last[0] == RET_K
    # Every jump lands inside the program (classic BPF only jumps forward).
    for index in range(len(program) // 8):
        op, jt, jf, _ = struct.unpack_from("=HBBI", program, index * 8)
        if op not in (RET_K, LD_W_ABS):
            assert index + 1 + max(jt, jf) < len(program) // 8


def test_ordinary_calls_are_allowed(arch: str) -> None:
    numbers = ARCHES[arch].numbers
    harmless = set(range(0, 450)) - set(numbers.values())
    program, audit_arch = build_filter(arch), ARCHES[arch].audit_arch
    assert all(decide(program, arch=audit_arch, nr=nr) == RET_ALLOW for nr in harmless)
    assert _call(arch, "socket", AF_UNIX) == RET_ALLOW
    assert _call(arch, "clone", THREAD_FLAGS) == RET_ALLOW
    assert _call(arch, "ioctl", 1, TCGETS) == RET_ALLOW
    assert _call(arch, "prctl", PR_SET_NAME) == RET_ALLOW


def test_the_deny_list_answers_eperm(arch: str) -> None:
    for name in DENIED:
        if name in ARCHES[arch].numbers:
            assert _call(arch, name) == EPERM, name
    for family in (AF_INET, AF_INET6, AF_NETLINK):
        assert _call(arch, "socket", family) == EPERM
    # New processes (fork, posix_spawn's vfork-style clone) and new namespaces, even for a thread.
    for flags in (SIGCHLD, CLONE_VM | CLONE_VFORK | SIGCHLD, THREAD_FLAGS | CLONE_NEWUSER, CLONE_NEWNS | CLONE_NEWPID,
                  CLONE_NEWNET | SIGCHLD):  # fmt: skip
        assert _call(arch, "clone", flags) == EPERM, hex(flags)
    assert _call(arch, "ioctl", 0, TIOCSTI) == EPERM
    # The parent-death signal that ends the sandbox with bubblewrap stays set.
    assert _call(arch, "prctl", PR_SET_PDEATHSIG, 0) == EPERM
    # clone3 hides its flags in memory: ENOSYS sends glibc back to clone(), whose flags are checked.
    assert _call(arch, "clone3") == ENOSYS


def test_other_abis_are_killed() -> None:
    program = build_filter("x86_64")
    i386 = 0x40000003
    assert decide(program, arch=i386, nr=1) == RET_KILL_PROCESS
    x32_read = 0x40000000
    assert decide(program, arch=ARCHES["x86_64"].audit_arch, nr=x32_read) == RET_KILL_PROCESS
    assert decide(build_filter("aarch64"), arch=ARCHES["x86_64"].audit_arch, nr=0) == RET_KILL_PROCESS


def test_an_unknown_architecture_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SeccompUnsupported, match="riscv64"):
        build_filter("riscv64")
    monkeypatch.setattr(seccomp, "machine_arch", lambda: "s390x")
    with pytest.raises(SeccompUnsupported, match="s390x"):
        build_filter()


@pytest.mark.parametrize(
    ("arch_name", "header"),
    [("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), ("aarch64", "/usr/include/asm-generic/unistd.h")],
)
def test_syscall_numbers_match_the_kernel_headers(arch_name: str, header: str) -> None:
    path = Path(header)
    if not path.exists():
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    defined = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", path.read_text())}
    for name, number in ARCHES[arch_name].numbers.items():
        assert defined.get(name) == number, name


def test_inside_the_sandbox_denied_calls_fail_with_eperm_and_allowed_ones_work() -> None:
    result = run_in_sandbox(
        "import os, threading\n"
        "try:\n"
        "    os.pidfd_open(os.getpid())\n"
        "except PermissionError as err:\n"
        "    print('pidfd_open', err.errno)\n"
        "out = []\n"
        "worker = threading.Thread(target=lambda: out.append(os.getpid()))\n"
        "worker.start(); worker.join()\n"
        "read, write = os.pipe()\n"
        "print('thread', out == [os.getpid()], 'pipe', os.write(write, b'ok'), os.read(read, 2))",
        timeout_s=2.0,
        memory_mb=128,
    )
    assert result.isolation == "bwrap+seccomp"
    assert result.stdout == f"pidfd_open {errno.EPERM}\nthread True pipe 2 b'ok'\n", result
