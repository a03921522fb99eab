"""
Subprocesses that always end: a reaper, a timeout, capped output, an optional sandbox.

A proof command or an agent CLI may start children of its own (a test runner's
workers, a shell's background jobs), and some of them leave the process group:
``setsid``, a double fork, a job-controlled shell. So an untrusted command runs under
a small reaper (``_reaper.py``, a child subreaper on Linux) that adopts every orphan of
its subtree and kills whatever is left when the command exits, or when mesh asks it
to stop. The reaper leads a new process group, which mesh kills as a last resort.

Where bubblewrap can run, a contained command also gets its own pid namespace (the
file system and network stay as they are): from inside it no process can name the
reaper to kill it, and when the namespace's first process ends the kernel ends the
rest.

mesh's own trusted commands (git) skip the reaper with ``contain=False``: they run
directly in a new process group, killed as a whole on timeout or cancellation.

Either way, once the command itself has exited, its output is read for a short while
more and then no longer waited for: a descendant that escaped and still holds the
output pipe open can never turn a finished command into a timed-out one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import attrs

from ..contracts._files import force_remove
from ..engine._call_facts import heartbeat, heartbeat_period
from ._owner import owner_environment
from ._sandbox import Sandbox, find_sandbox, pid_namespace, require_sandbox

__all__ = ["CommandResult", "key_line", "run_command"]

DEFAULT_OUTPUT_LIMIT: Final = 256 * 1024
_TERM_GRACE: Final = 2.0
# After its own grace, the reaper's SIGKILL sweep of the subtree takes a moment more.
_SWEEP_GRACE: Final = 1.0
# On cancellation, how long the reaper gets to sweep before its group is killed.
_CANCEL_GRACE: Final = 1.0
_DRAIN_GRACE: Final = 0.5
_REAPER: Final = str(Path(__file__).with_name("_reaper.py"))
# Only Linux has child subreapers; elsewhere the reaper would only exec the command.
_CONTAINABLE: Final = sys.platform.startswith("linux")
_KEY_PATTERNS: Final = (
    re.compile(r"\b\d+ (passed|failed|errors?)\b"),
    re.compile(r"\w*(Error|Exception)\b|\b(FAILED|ERROR|error|failed|FAIL)\b"),
)
_KEY_LINE_LIMIT: Final = 240


@attrs.frozen(kw_only=True)
class CommandResult:
    """What a command did: exit code (None when it was killed), output, timing."""

    command: str
    exit_code: int | None
    output: str
    timed_out: bool = False
    truncated: bool = False
    seconds: float = 0.0
    errors: str = ""
    """Standard error, when it was kept apart from ``output``."""

    @property
    def ok(self) -> bool:
        """Exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out


def key_line(output: str) -> str:
    r"""
    The one line that says how a command went: a test summary, else an error, else the last line.

    >>> key_line("collected 3 items\n...\n3 passed in 0.01s\n")
    '3 passed in 0.01s'
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for pattern in _KEY_PATTERNS:
        for line in reversed(lines):
            if pattern.search(line):
                return line[:_KEY_LINE_LIMIT]
    return lines[-1][:_KEY_LINE_LIMIT] if lines else ""


def _kill_group(process: anyio.abc.Process, sig: signal.Signals) -> None:
    # The group may be gone already (everything exited); that is the goal anyway.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


class _Capture:
    """Output kept as its first and last halves when it is larger than the limit."""

    def __init__(self, limit: int) -> None:
        self.half = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.truncated = False
        self.finished = anyio.Event()

    async def read(self, stream: anyio.abc.ByteReceiveStream) -> None:
        try:
            async for chunk in stream:
                room = max(0, self.half - len(self.head))
                self.head.extend(chunk[:room])
                self.tail.extend(chunk[room:])
                if len(self.tail) > self.half:
                    self.truncated = True
                    del self.tail[: len(self.tail) - self.half]
        finally:
            self.finished.set()

    def text(self) -> str:
        marker = b"\n[... output truncated ...]\n" if self.truncated else b""
        return (bytes(self.head) + marker + bytes(self.tail)).decode(errors="replace")


async def run_command(
    command: str | Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    timeout: float | None,  # noqa: ASYNC109 - it stops the child; the call still returns a result
    env: Mapping[str, str] | None = None,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    stdin: bytes | None = None,
    merge_stderr: bool = True,
    contain: bool = True,
    sandbox: Sandbox | None = None,
    writable: Sequence[str | os.PathLike[str]] = (),
) -> CommandResult:
    """
    Run ``command`` (a shell string, or an argv list) so that nothing it starts survives it.

    Output (stdout and stderr together, unless ``merge_stderr`` is false) is
    captured up to ``output_limit`` bytes. On timeout the command gets SIGTERM, then
    SIGKILL after a grace period; on cancellation it is stopped at once.

    Args:
        command: A shell command line (run by ``/bin/sh -c``), or an argv list.
        cwd: The folder the command runs in.
        timeout: Seconds before the command is stopped and reported as timed out.
        env: The command's whole environment (mesh's own when None).
        output_limit: Bytes of output kept: the first and last halves.
        stdin: Bytes fed to the command's standard input (none when None).
        merge_stderr: Standard error goes into ``output``; else into ``errors``.
        contain: Run the command under the reaper, which leaves none of its
            descendants alive, whatever process group or session they moved to
            (Linux; elsewhere only the process group is killed). False for commands
            mesh trusts, such as its own git calls: they start faster.
        sandbox: Run the command inside this bubblewrap sandbox.
        writable: With a sandbox, paths the command may write besides ``cwd``.

    Raises:
        FileNotFoundError: An argv list names a program that is not there.
        SandboxUnavailable: A sandbox was asked for, and bubblewrap cannot run here.

    .. versionchanged:: 0.1.0
       Added ``contain``, ``sandbox`` and ``writable``.
    """
    # A sandboxed command's own folder (its TMPDIR, its seccomp filter), gone with it.
    private = None
    if sandbox is not None:
        private = Path(await anyio.to_thread.run_sync(_private_folder, sandbox.seccomp))
    try:
        return await _run(
            command,
            cwd=cwd,
            timeout=timeout,
            env=env,
            output_limit=output_limit,
            stdin=stdin,
            merge_stderr=merge_stderr,
            contained=contain and _CONTAINABLE,
            sandbox=sandbox,
            writable=writable,
            private=private,
        )
    finally:
        if private is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(force_remove, private)


_TMP: Final = "tmp"
_SECCOMP: Final = "seccomp.bpf"


def _private_folder(seccomp: bytes | None) -> str:
    """A new folder holding the command's TMPDIR and, if any, its seccomp filter."""
    folder = Path(tempfile.mkdtemp(prefix="mesh-sandbox-"))
    (folder / _TMP).mkdir()
    if seccomp is not None:
        (folder / _SECCOMP).write_bytes(seccomp)
    return str(folder)


async def _run(
    command: str | Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    timeout: float | None,  # noqa: ASYNC109 - as run_command
    env: Mapping[str, str] | None,
    output_limit: int,
    stdin: bytes | None,
    merge_stderr: bool,
    contained: bool,
    sandbox: Sandbox | None,
    writable: Sequence[str | os.PathLike[str]],
    private: Path | None,
) -> CommandResult:
    """`run_command`, with the sandbox's private folder made."""
    shown = command if isinstance(command, str) else " ".join(command)
    started = anyio.current_time()
    argv = await _argv(
        command,
        cwd=cwd,
        env=env,
        contained=contained,
        sandbox=sandbox,
        writable=writable,
        private=private,
    )
    # Marked as the run owner's, so that a next owner finds it if this process dies.
    marks = owner_environment()
    environment = {**(os.environ if env is None else env), **marks} if marks else env
    # Shielded: a cancellation while the process is being set up would leave it running
    # with no handle to stop it; it comes at the next checkpoint, inside the try below.
    with anyio.CancelScope(shield=True):
        process = await anyio.open_process(
            argv,
            cwd=cwd,
            env=dict(environment) if environment is not None else None,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,
        )
    capture = _Capture(output_limit)
    errors = _Capture(output_limit)
    timed_out = False
    try:
        with anyio.move_on_after(timeout) as scope:
            await _communicate(process, stdin or b"", capture, errors)
        if scope.cancelled_caught:
            timed_out = True
            await _stop(process, contained=contained, hurry=False)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                # Cancelled (or failed) while the command ran: stop it before letting go.
                await _stop(process, contained=contained, hurry=True)
            # Whatever happened, nothing of the group survives the call.
            _kill_group(process, signal.SIGKILL)
            await process.aclose()
    return CommandResult(
        command=shown,
        exit_code=None if timed_out else process.returncode,
        output=capture.text(),
        timed_out=timed_out,
        truncated=capture.truncated,
        errors=errors.text(),
        seconds=anyio.current_time() - started,
    )


async def _argv(
    command: str | Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None,
    contained: bool,
    sandbox: Sandbox | None,
    writable: Sequence[str | os.PathLike[str]],
    private: Path | None,
) -> str | list[str]:
    """What to start: the command itself, or the reaper and/or bwrap that run it."""
    if not contained and sandbox is None:
        return command if isinstance(command, str) else list(command)
    if isinstance(command, str):
        argv = ["/bin/sh", "-c", command]
    else:
        argv = list(command)
        _check_program(argv[0], cwd=cwd, env=env)
    if sandbox is not None:
        bwrap = await anyio.to_thread.run_sync(require_sandbox)
        assert private is not None  # noqa: S101 - run_command makes it with the sandbox
        argv = (
            sandbox.prefix(
                cwd,
                writable=writable,
                bwrap=bwrap,
                tmp=private / _TMP,
                seccomp=None if sandbox.seccomp is None else private / _SECCOMP,
            )
            + argv
        )
    elif contained and (found := await anyio.to_thread.run_sync(find_sandbox)) is not None:
        # Where bubblewrap works, even an unsandboxed command gets its own pid namespace:
        # it cannot kill its reaper (and so free its children) from there.
        argv = pid_namespace(found) + argv
    if contained:
        reaper = [sys.executable, "-I", "-S", _REAPER, "--grace", str(_TERM_GRACE)]
        argv = [*reaper, "--parent", str(os.getpid()), "--", *argv]
    return argv


def _check_program(
    program: str, *, cwd: str | os.PathLike[str], env: Mapping[str, str] | None
) -> None:
    """Raise FileNotFoundError as a direct start would; the reaper could only exit 127."""
    if os.sep in program:
        found = os.access(Path(cwd, program), os.X_OK)
    else:
        found = shutil.which(program, path=os.pathsep.join(os.get_exec_path(env))) is not None
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


async def _communicate(
    process: anyio.abc.Process, stdin: bytes, capture: _Capture, errors: _Capture
) -> None:
    """Feed the input, read the output, and wait for the command (or its reaper) to exit."""
    assert process.stdout is not None  # noqa: S101 - run_command asks for it
    async with anyio.create_task_group() as group:
        group.start_soon(capture.read, process.stdout)
        if process.stderr is not None:
            group.start_soon(errors.read, process.stderr)
        else:
            errors.finished.set()
        if process.stdin is not None:
            group.start_soon(_feed, process.stdin, stdin)
        if (period := heartbeat_period()) is not None:
            # The call is alive while its process runs; a run listening ends a hung one.
            group.start_soon(_beat, period)
        await process.wait()
        # The command is done. Whatever still holds a pipe open escaped it (or was handed
        # the pipe): take what is there now, then stop waiting for an end that may not come.
        with anyio.move_on_after(_DRAIN_GRACE):
            await capture.finished.wait()
            await errors.finished.wait()
        _kill_group(process, signal.SIGKILL)
        group.cancel_scope.cancel()


async def _beat(period: float) -> None:
    while True:
        heartbeat()
        await anyio.sleep(period)


async def _feed(stream: anyio.abc.ByteSendStream, data: bytes) -> None:
    # A command may exit without reading all its input; its exit status says how it went.
    with contextlib.suppress(anyio.BrokenResourceError):
        async with stream:
            await stream.send(data)


async def _stop(process: anyio.abc.Process, *, contained: bool, hurry: bool) -> None:
    """
    End the command: SIGTERM, a grace period, then SIGKILL to its whole group.

    Contained, the reaper gets the SIGTERM and the time to stop and sweep the subtree,
    which a SIGKILLed reaper could not do. Hurried (on cancellation), a second signal
    tells the reaper to skip the subtree's grace; an uncontained group is killed at once.
    """
    if hurry and not contained:
        _kill_group(process, signal.SIGKILL)
        return
    _kill_group(process, signal.SIGTERM)
    if hurry:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGHUP)
        grace = _CANCEL_GRACE
    else:
        grace = _TERM_GRACE + (_SWEEP_GRACE if contained else 0.0)
    with anyio.move_on_after(grace) as waiting:
        await process.wait()
    if waiting.cancelled_caught:
        _kill_group(process, signal.SIGKILL)
