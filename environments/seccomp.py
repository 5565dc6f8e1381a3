"""A classic-BPF seccomp filter for the code sandbox, assembled here so no C library is needed.

bubblewrap loads the program from a file descriptor (``bwrap --seccomp FD``) and applies it to the
sandboxed process and to its PID-1 reaper just before they run. The policy is a deny-list on top of
the namespaces: the kernel surfaces a namespaced program does not need and that are used to escape
or to reach other processes (new namespaces, mounts, ptrace and cross-process memory, pidfds, eBPF,
perf, keyrings, io_uring, userfaultfd, module and kexec loading, terminal injection), non-Unix
sockets, clearing the parent-death signal, and every new process (only threads may be cloned), which
makes fork bombs and processes that outlive the run impossible even if the in-process audit hook is
bypassed. Denied calls fail with
EPERM so the program sees an ordinary error; a call from another ABI (i386 ``int 0x80``, x32) kills
the process, because its numbers mean other calls and would slip past the list.

Layout of ``struct seccomp_data`` (linux/seccomp.h): ``int nr`` at 0, ``u32 arch`` at 4, ``u64
instruction_pointer`` at 8, ``u64 args[6]`` at 16. The filter reads the low 32 bits of arguments
(offset ``16 + 8 * i`` on little-endian machines), which hold every flag and family it tests.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

# Classic BPF opcodes (linux/bpf_common.h): load word absolute, conditional jumps, return constant.
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

NR_OFFSET = 0
ARCH_OFFSET = 4


def arg_offset(index: int) -> int:
    """Offset of the low 32 bits of syscall argument ``index`` (little-endian machines only)."""
    return 16 + 8 * index


AF_UNIX = 1
CLONE_THREAD = 0x00010000
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET. CLONE_NEWTIME (0x80) is left
# out on purpose: for clone() that bit is part of the exit signal, and clone3 is refused as a whole.
CLONE_NEW_NAMESPACES = 0x7E020000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
# The sandbox dies with bubblewrap through this parent-death signal; the program may not clear it.
PR_SET_PDEATHSIG = 1

# Denied with EPERM everywhere. Names are the kernel's; each architecture maps those it has.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
    "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "personality",
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
    "acct", "swapon", "swapoff", "quotactl", "syslog", "vhangup", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "fork", "vfork", "iopl", "ioperm", "uselib",
)  # fmt: skip
# Answered with ENOSYS: clone3 passes its flags in memory, where BPF cannot look, and glibc falls back
# to clone() (whose flags the filter checks) when clone3 is missing.
UNSUPPORTED = ("clone3",)


@dataclass(frozen=True, kw_only=True)
class Arch:
    audit_arch: int
    numbers: dict[str, int]
    # x86_64 shares its audit arch with the x32 ABI, whose numbers carry this bit.
    x32_bit: int | None = None


X86_64 = {
    "socket": 41, "clone": 56, "fork": 57, "vfork": 58, "ioctl": 16, "prctl": 157, "clone3": 435,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "process_madvise": 440,
    "kcmp": 312, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "move_mount": 429,
    "open_tree": 428, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "keyctl": 250, "add_key": 248, "request_key": 249, "personality": 135, "kexec_load": 246,
    "kexec_file_load": 320, "reboot": 169, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "acct": 163, "swapon": 167, "swapoff": 168, "quotactl": 179,
    "syslog": 103, "vhangup": 153, "lookup_dcookie": 212, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "fanotify_init": 300, "settimeofday": 164, "clock_settime": 227,
    "clock_adjtime": 305, "adjtimex": 159, "iopl": 172, "ioperm": 173, "uselib": 134,
}  # fmt: skip
# asm-generic numbering; aarch64 has no fork/vfork/iopl/ioperm/uselib.
AARCH64 = {
    "socket": 198, "clone": 220, "ioctl": 29, "prctl": 167, "clone3": 435,
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "process_madvise": 440,
    "kcmp": 272, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
    "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "move_mount": 429,
    "open_tree": 428, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "unshare": 97, "setns": 268, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "keyctl": 219, "add_key": 217, "request_key": 218, "personality": 92, "kexec_load": 104,
    "kexec_file_load": 294, "reboot": 142, "init_module": 105, "finit_module": 273,
    "delete_module": 106, "acct": 89, "swapon": 224, "swapoff": 225, "quotactl": 60,
    "syslog": 116, "vhangup": 58, "lookup_dcookie": 18, "open_by_handle_at": 265,
    "name_to_handle_at": 264, "fanotify_init": 262, "settimeofday": 170, "clock_settime": 112,
    "clock_adjtime": 266, "adjtimex": 171,
}  # fmt: skip
ARCHES = {
    "x86_64": Arch(audit_arch=0xC000003E, x32_bit=0x40000000, numbers=X86_64),
    "aarch64": Arch(audit_arch=0xC00000B7, numbers=AARCH64),
}


class SeccompUnsupported(RuntimeError):
    """No syscall table for this machine's architecture, so no filter can be built."""


def machine_arch() -> str:
    return platform.machine()


def _return(action: int) -> tuple[int, int, int, int]:
    return (RET_K, 0, 0, action)


class _Assembler:
    """Instructions with symbolic jump targets, resolved to classic BPF's 8-bit relative offsets."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | int, str | int, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def load(self, offset: int) -> None:
        self._code.append((LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, *, true: str | int = 0, false: str | int = 0) -> None:
        """Jump to label ``true`` when the test holds, else to ``false``; 0 means the next instruction."""
        self._code.append((op, true, false, k))

    def ret(self, action: int) -> None:
        self._code.append(_return(action))

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (op, true, false, k) in enumerate(self._code):
            jt, jf = (self._offset(index, target) for target in (true, false))
            out += struct.pack("=HBBI", op, jt, jf, k)
        return bytes(out)

    def _offset(self, index: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        offset = self._labels[target] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"seccomp jump to {target!r} out of range ({offset}); the deny-list is too long")
        return offset


def build_filter(arch_name: str | None = None) -> bytes:
    """The sandbox's filter for ``arch_name`` (default: this machine) as ``struct sock_filter[]`` bytes."""
    arch_name = arch_name or machine_arch()
    arch = ARCHES.get(arch_name)
    if arch is None:
        raise SeccompUnsupported(f"no seccomp syscall table for architecture {arch_name!r} (known: {sorted(ARCHES)})")
    nr = arch.numbers
    asm = _Assembler()
    asm.load(ARCH_OFFSET)
    asm.jump(JEQ_K, arch.audit_arch, false="kill")
    asm.load(NR_OFFSET)
    if arch.x32_bit is not None:
        asm.jump(JGE_K, arch.x32_bit, true="kill")
    for name in DENIED:
        if name in nr:
            asm.jump(JEQ_K, nr[name], true="deny")
    for name in UNSUPPORTED:
        asm.jump(JEQ_K, nr[name], true="enosys")
    asm.jump(JEQ_K, nr["socket"], true="socket")
    asm.jump(JEQ_K, nr["clone"], true="clone")
    asm.jump(JEQ_K, nr["ioctl"], true="ioctl")
    asm.jump(JEQ_K, nr["prctl"], true="prctl")
    asm.ret(RET_ALLOW)

    asm.label("socket")
    asm.load(arg_offset(0))
    asm.jump(JEQ_K, AF_UNIX, true="allow", false="deny")

    asm.label("clone")
    asm.load(arg_offset(0))
    asm.jump(JSET_K, CLONE_NEW_NAMESPACES, true="deny")
    asm.jump(JSET_K, CLONE_THREAD, true="allow", false="deny")

    asm.label("prctl")
    asm.load(arg_offset(0))
    asm.jump(JEQ_K, PR_SET_PDEATHSIG, true="deny", false="allow")

    asm.label("ioctl")
    asm.load(arg_offset(1))
    asm.jump(JEQ_K, TIOCSTI, true="deny")
    asm.jump(JEQ_K, TIOCLINUX, true="deny")

    asm.label("allow")
    asm.ret(RET_ALLOW)
    asm.label("deny")
    asm.ret(RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(RET_ERRNO | errno.ENOSYS)
    asm.label("kill")
    asm.ret(RET_KILL_PROCESS)
    return asm.assemble()
