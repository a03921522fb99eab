"""Subprocesses in their own process group: timeouts and cancellation kill grandchildren too."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import pytest

from mesh.host._process import key_line, run_command

from repo_helpers import wait_gone

pytestmark = pytest.mark.anyio


class TestRunCommand:
    async def test_exit_code_and_merged_output(self, tmp_path: Path) -> None:
        """A shell string runs in ``cwd``; stdout and stderr come back together."""
        result = await run_command("pwd; echo oops >&2; exit 3", cwd=tmp_path, timeout=10)
        assert (result.exit_code, result.ok, result.timed_out) == (3, False, False)
        assert result.output == f"{tmp_path}\noops\n"

    async def test_separate_stderr_and_stdin(self, tmp_path: Path) -> None:
        """An argv list with input; stderr kept apart when asked."""
        script = "import sys; print(sys.stdin.read().upper()); print('warn', file=sys.stderr)"
        result = await run_command(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            timeout=10,
            stdin=b"abc",
            merge_stderr=False,
        )
        assert (result.ok, result.output, result.errors) == (True, "ABC\n", "warn\n")

    async def test_timeout_kills_the_whole_group(self, tmp_path: Path, marker: str) -> None:
        """A hung command and the grandchild it started are both gone when the call returns."""
        started = time.monotonic()
        result = await run_command(
            f"sleep {marker} & echo started; wait", cwd=tmp_path, timeout=0.5
        )
        assert time.monotonic() - started < 5
        assert (result.timed_out, result.exit_code, result.output) == (True, None, "started\n")
        assert await wait_gone(marker)

    async def test_term_ignored_means_kill(self, tmp_path: Path) -> None:
        """A command that ignores SIGTERM is killed after the grace period."""
        result = await run_command("trap '' TERM; echo ready; sleep 30", cwd=tmp_path, timeout=0.3)
        assert (result.timed_out, result.output) == (True, "ready\n")

    async def test_cancellation_kills_the_group(self, tmp_path: Path, marker: str) -> None:
        """Cancelling the caller leaves no process of the group behind."""
        with anyio.move_on_after(0.5):
            await run_command(f"sleep {marker} & wait", cwd=tmp_path, timeout=None)
        assert await wait_gone(marker)

    async def test_background_child_holding_the_pipe(self, tmp_path: Path, marker: str) -> None:
        """A leader that exits while a detached child keeps its output open returns promptly."""
        started = time.monotonic()
        result = await run_command(f"(sleep {marker} &); echo done", cwd=tmp_path, timeout=30)
        assert time.monotonic() - started < 10
        assert (result.ok, result.output) == (True, "done\n")
        assert await wait_gone(marker)

    async def test_output_is_capped(self, tmp_path: Path) -> None:
        """Huge output keeps its beginning and its end."""
        script = "print('first'); print('x' * 100000); print('last')"
        result = await run_command(
            [sys.executable, "-c", script], cwd=tmp_path, timeout=10, output_limit=64
        )
        assert result.truncated
        assert result.output.startswith("first\n")
        assert result.output.endswith("last\n")
        assert "[... output truncated ...]" in result.output
        assert len(result.output) < 200


class TestKeyLine:
    @pytest.mark.parametrize(
        ("output", "expected"),
        [
            (
                "collected 3\n..F\nFAILED t.py::x\n1 failed, 2 passed in 0.1s\n",
                "1 failed, 2 passed in 0.1s",
            ),
            ("Traceback (most recent call last):\n  ...\nValueError: bad\n", "ValueError: bad"),
            ("building\nall good\n", "all good"),
            ("", ""),
            ("x" * 500, "x" * 240),
        ],
    )
    def test_key_line(self, output: str, expected: str) -> None:
        """A test summary beats an error line, which beats the last line."""
        assert key_line(output) == expected
