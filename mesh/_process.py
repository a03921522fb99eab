"""
Subprocesses that can always be stopped: own process group, timeout, capped output.

A proof command or an agent CLI may start children of its own (a test runner's
workers, a shell's background jobs). Each command runs as the leader of a new
process group, and on timeout or cancellation the whole group is killed, so no
grandchild outlives the call or keeps its output pipe open.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Final

import anyio
import anyio.abc
import attrs

__all__ = ["CommandResult", "key_line", "run_command"]

DEFAULT_OUTPUT_LIMIT: Final = 256 * 1024
_TERM_GRACE: Final = 2.0
_DRAIN_GRACE: Final = 0.5
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
) -> CommandResult:
    """
    Run ``command`` (a shell string, or an argv list) in its own process group.

    Output (stdout and stderr together, unless ``merge_stderr`` is false) is
    captured up to ``output_limit`` bytes. On timeout the group gets SIGTERM,
    then SIGKILL after a grace period; on cancellation it gets SIGKILL at once.
    """
    shown = command if isinstance(command, str) else " ".join(command)
    started = anyio.current_time()
    process = await anyio.open_process(
        command,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=True,
    )
    capture = _Capture(output_limit)
    errors = _Capture(output_limit)
    timed_out = False
    try:
        assert process.stdout is not None  # noqa: S101 - requested above
        stdout = process.stdout

        async def run() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(capture.read, stdout)
                if process.stderr is not None:
                    group.start_soon(errors.read, process.stderr)
                if process.stdin is not None:
                    async with process.stdin:
                        await process.stdin.send(stdin or b"")
                await process.wait()
                # The leader is done; a background child may still hold the pipe open.
                with anyio.move_on_after(_DRAIN_GRACE):
                    await capture.finished.wait()
                _kill_group(process, signal.SIGKILL)

        with anyio.move_on_after(timeout) as scope:
            await run()
        if scope.cancelled_caught:
            timed_out = True
            _kill_group(process, signal.SIGTERM)
            with anyio.move_on_after(_TERM_GRACE) as grace:
                await process.wait()
            if grace.cancelled_caught:
                _kill_group(process, signal.SIGKILL)
    finally:
        # Whatever happened (cancellation included), nothing of the group survives the call.
        _kill_group(process, signal.SIGKILL)
        with anyio.CancelScope(shield=True):
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
