"""
An optional bubblewrap sandbox for the commands mesh runs.

With a `Sandbox`, `run_command` starts a command inside ``bwrap``: the whole system is
visible read-only (``/tmp`` included), and only the command's working folder, the
paths named writable and a private temporary folder (its ``TMPDIR``, removed after
the command) can be written. The command gets its own pid namespace (nothing it
starts outlives it) and, on request, no network but loopback. The environment is
kept, with ``TMPDIR`` pointing at the private folder.

A read-only file system does not stop ``connect()`` to a Unix socket the command can
see: a terminal multiplexer's, an ssh agent's, a container daemon's, any of which runs
commands outside the sandbox. So a seccomp filter refuses to create Unix-domain sockets
and io_uring (which could make them past the filter); ``socketpair`` still gives
connected stream pairs (event loops need them), never datagram ones, which ``sendto``
could aim at any socket outside. It also
kills a process that makes system calls of another architecture (the 32-bit
``socketcall`` route around it). The filter is written for x86-64 and AArch64; on other
machines the sandbox runs without it, and `Sandbox.seccomp` says so.

Nothing in mesh sandboxes a command unless asked; `require_sandbox` says, in one line,
what to install or allow when bubblewrap cannot run here.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Self

import attrs

from ..contracts._enums import FailureCode
from ..contracts._errors import MeshError

__all__ = [
    "Sandbox",
    "SandboxUnavailable",
    "find_sandbox",
    "pid_namespace",
    "require_sandbox",
    "seccomp_program",
]

_MISSING: Final = (
    "bubblewrap (bwrap) is not on PATH: install it (Debian/Ubuntu: apt-get install bubblewrap)"
)
# The smallest sandbox that needs what every real one needs: mount and pid namespaces.
_PROBE: Final = (
    "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
    "--unshare-pid", "--die-with-parent", "true",
)  # fmt: skip
_PROBE_TIMEOUT: Final = 30.0
# bwrap reads the seccomp program from this descriptor (see `Sandbox.prefix`).
SECCOMP_FD: Final = 3


@attrs.frozen(kw_only=True)
class _Machine:
    audit_arch: int
    socket: int
    socketpair: int
    # x86-64 also accepts x32 calls (numbers with this bit set) from 64-bit processes.
    x32_bit: int | None


# AUDIT_ARCH_* from <linux/audit.h>; syscall numbers from each architecture's table.
_MACHINES: Final = {
    "x86_64": _Machine(audit_arch=0xC000003E, socket=41, socketpair=53, x32_bit=0x40000000),
    "amd64": _Machine(audit_arch=0xC000003E, socket=41, socketpair=53, x32_bit=0x40000000),
    "aarch64": _Machine(audit_arch=0xC00000B7, socket=198, socketpair=199, x32_bit=None),
    "arm64": _Machine(audit_arch=0xC00000B7, socket=198, socketpair=199, x32_bit=None),
}
# io_uring_setup, io_uring_enter, io_uring_register: one numbering on every architecture.
_IO_URING: Final = (425, 426, 427)
_AF_UNIX: Final = 1
_SOCK_STREAM: Final = 1
# The socket type without SOCK_NONBLOCK and SOCK_CLOEXEC, which share its argument.
_SOCK_TYPE_MASK: Final = 0xF
_EACCES: Final = 13
_ENOSYS: Final = 38
# Classic BPF opcodes and seccomp return values (<linux/filter.h>, <linux/seccomp.h>).
_LD_W_ABS: Final = 0x20
_JEQ_K: Final = 0x15
_JGE_K: Final = 0x35
_AND_K: Final = 0x54
_RET_K: Final = 0x06
_RET_KILL_PROCESS: Final = 0x80000000
_RET_ERRNO: Final = 0x00050000
_RET_ALLOW: Final = 0x7FFF0000
# Offsets in struct seccomp_data: nr, arch, then (after the instruction pointer) args;
# the low halves of the first arguments on these little-endian machines.
_NR: Final = 0
_ARCH: Final = 4
_ARG0_LOW: Final = 16
_ARG1_LOW: Final = 24


# One filter instruction: opcode, constant, and the labels its jumps go to when true
# and when false (None: the next instruction).
_Step = tuple[int, int, str | None, str | None]


def _assemble(steps: Sequence[_Step | str]) -> bytes:
    """Classic BPF from steps and labels (strings mark where they stand)."""
    where: dict[str, int] = {}
    placed: list[_Step] = []
    for step in steps:
        if isinstance(step, str):
            where[step] = len(placed)
        else:
            placed.append(step)

    def offset(label: str | None, index: int) -> int:
        return 0 if label is None else where[label] - index - 1

    return b"".join(
        struct.pack("=HBBI", code, offset(true, index), offset(false, index), k)
        for index, (code, k, true, false) in enumerate(placed)
    )


@functools.cache
def seccomp_program(machine: str | None = None) -> bytes | None:
    """
    The seccomp filter a sandboxed command runs under, as bwrap reads it; None if unknown.

    Refuses ``socket(AF_UNIX, ...)`` and ``socketpair(AF_UNIX, ...)`` of any type but
    ``SOCK_STREAM`` with EACCES, io_uring with ENOSYS, and kills a
    process that makes a system call of another architecture (or x32's). ``machine``
    is `platform.machine` by default; only x86-64 and AArch64 have a filter.
    """
    known = _MACHINES.get(platform.machine() if machine is None else machine)
    if known is None:
        return None
    x32: list[_Step] = []
    if known.x32_bit is not None:
        x32 = [(_JGE_K, known.x32_bit, "kill", None)]
    return _assemble([
        (_LD_W_ABS, _ARCH, None, None),
        (_JEQ_K, known.audit_arch, None, "kill"),
        (_LD_W_ABS, _NR, None, None),
        *x32,
        (_JEQ_K, known.socket, "socket", None),
        (_JEQ_K, known.socketpair, "socketpair", None),
        *[(_JEQ_K, number, "absent", None) for number in _IO_URING],
        (_RET_K, _RET_ALLOW, None, None),
        "socket",
        (_LD_W_ABS, _ARG0_LOW, None, None),
        (_JEQ_K, _AF_UNIX, "refuse", None),
        (_RET_K, _RET_ALLOW, None, None),
        "socketpair",
        (_LD_W_ABS, _ARG0_LOW, None, None),
        (_JEQ_K, _AF_UNIX, None, "allow"),
        (_LD_W_ABS, _ARG1_LOW, None, None),
        (_AND_K, _SOCK_TYPE_MASK, None, None),
        (_JEQ_K, _SOCK_STREAM, "allow", "refuse"),
        "allow",
        (_RET_K, _RET_ALLOW, None, None),
        "refuse",
        (_RET_K, _RET_ERRNO | _EACCES, None, None),
        "absent",
        (_RET_K, _RET_ERRNO | _ENOSYS, None, None),
        "kill",
        (_RET_K, _RET_KILL_PROCESS, None, None),
    ])  # fmt: skip


class SandboxUnavailable(MeshError, RuntimeError):
    """
    A command was to run in a bubblewrap sandbox, and bubblewrap cannot run here.

    The message says what to install, or bubblewrap's own complaint and what to allow.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE


@attrs.frozen(kw_only=True)
class Sandbox:
    """
    How to sandbox a command with bubblewrap (``bwrap``).

    Pass one to `run_command` as ``sandbox=``. The command sees the whole system
    read-only; it may write only in its working folder, in the ``writable`` paths
    and in a private temporary folder (``TMPDIR``), and runs in its own pid namespace.

    .. versionadded:: 0.1.0
    """

    network: bool = True
    """Whether the command may use the network; False leaves it only a loopback interface."""
    writable: tuple[str, ...] = ()
    """Paths, besides the working folder, the command may write (relative ones from there)."""
    unix_sockets: bool = False
    """
    Whether the command may create Unix-domain sockets. With them it can reach every
    listening socket it sees (an ssh agent, tmux, a container daemon): only for commands
    you trust with everything those serve.
    """

    @classmethod
    def detect(cls, *, network: bool = True, writable: tuple[str, ...] = ()) -> Self | None:
        """A sandbox if bubblewrap works here, else None (`require_sandbox` says why)."""
        return cls(network=network, writable=writable) if find_sandbox() else None

    @property
    def seccomp(self) -> bytes | None:
        """The filter commands run under (`seccomp_program`); None: no filter applies."""
        return None if self.unix_sockets else seccomp_program()

    def prefix(
        self,
        cwd: str | os.PathLike[str],
        *,
        writable: Sequence[str | os.PathLike[str]] = (),
        bwrap: str = "bwrap",
        tmp: str | os.PathLike[str] | None = None,
        seccomp: str | os.PathLike[str] | None = None,
    ) -> list[str]:
        """
        The argv that runs the command appended to it in this sandbox.

        Args:
            cwd: The command's working folder: writable, and where it starts.
            writable: More paths to make writable, besides ``self.writable``.
            bwrap: The bubblewrap executable (`require_sandbox` finds it).
            tmp: A private, empty folder for temporary files: writable, and the
                command's ``TMPDIR`` (`run_command` makes one per command).
            seccomp: A file holding `seccomp`'s filter; the argv then starts with a
                shell that opens it for bwrap. Without one, no filter.
        """
        here = Path(cwd).absolute()
        binds = [str(here / path) for path in (".", *self.writable, *writable)]
        if tmp is not None:
            binds.append(os.fspath(tmp))
        # The host's /tmp stays visible (read-only, like everything else): projects,
        # virtual environments and scripts live there too.
        argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        if seccomp is not None:
            # bwrap takes a filter only from an open descriptor; a shell opens it.
            opener = f'exec "$@" {SECCOMP_FD}<"$0"'
            argv = ["/bin/sh", "-c", opener, os.fspath(seccomp), *argv]
            argv += ["--seccomp", str(SECCOMP_FD)]
        for path in binds:
            argv += ["--bind", path, path]
        argv += ["--chdir", binds[0]]
        if tmp is not None:
            argv += ["--setenv", "TMPDIR", os.fspath(tmp)]
        # Run as root, bubblewrap would keep every capability: enough to remount "/"
        # writable or to join the host's network again. None are kept.
        argv += ["--cap-drop", "ALL", "--unshare-pid", "--die-with-parent", "--new-session"]
        if not self.network:
            argv.append("--unshare-net")
        argv.append("--")
        return argv


def pid_namespace(bwrap: str) -> list[str]:
    """
    The ``bwrap`` argv that runs a command in its own pid namespace, and nothing else.

    The file system, network and devices stay as they are. From inside, no
    process outside the namespace can be named, so a command cannot kill the
    reaper that watches it; and when the namespace's first process ends, the
    kernel ends every process in it.
    """
    return [
        bwrap, "--dev-bind", "/", "/", "--proc", "/proc",
        "--unshare-pid", "--die-with-parent", "--",
    ]  # fmt: skip


def find_sandbox() -> str | None:
    """
    The path of a ``bwrap`` on PATH that can make a sandbox here, else None.

    .. versionadded:: 0.1.0
    """
    path = shutil.which("bwrap")
    return path if path is not None and not _problem(path) else None


def require_sandbox() -> str:
    """
    The path of a ``bwrap`` on PATH that can make a sandbox here.

    Raises:
        SandboxUnavailable: bubblewrap is missing, or cannot create namespaces here.

    .. versionadded:: 0.1.0
    """
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(_MISSING)
    problem = _problem(path)
    if problem:
        raise SandboxUnavailable(problem)
    return path


@functools.cache
def _problem(bwrap: str) -> str:
    """Why ``bwrap`` cannot make a sandbox here, or "" when it can; tried once per process."""
    try:
        done = _probe(bwrap)
    except (OSError, subprocess.TimeoutExpired) as exc:
        detail = str(exc)
    else:
        if done.returncode == 0:
            return ""
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {done.returncode}"
    return (
        f"bubblewrap ({bwrap}) cannot create a sandbox here: {detail}; unprivileged user"
        " namespaces (and seccomp) must be allowed (sysctl kernel.unprivileged_userns_clone=1,"
        " and on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0)"
    )


def _probe(bwrap: str) -> subprocess.CompletedProcess[str]:
    """The smallest sandbox, with the filter where there is one: no seccomp fails here."""
    program = seccomp_program()
    read, write = os.pipe()
    try:
        with os.fdopen(write, "wb") as sink:
            sink.write(program or b"")
        filtered = ["--seccomp", str(read)] if program else []
        return subprocess.run(  # noqa: S603 - a fixed argv for the bwrap found on PATH
            [bwrap, *filtered, *_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_PROBE_TIMEOUT,
            check=False,
            pass_fds=(read,),
        )
    finally:
        os.close(read)
