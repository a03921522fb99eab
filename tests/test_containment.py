"""
Commands that always end: the reaper, run_command's containment, the bubblewrap sandbox.

Every escape here is built for real (``setsid``, a double fork, job control, a
fork loop) and every check looks at the real process table: each test marks the
processes it starts with a unique sleep duration and scans ``/proc/*/cmdline`` for it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import platform
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import mesh
from mesh.contracts._enums import FailureCode
from mesh.contracts._errors import MeshError
from mesh.host import _reaper
from mesh.host._process import run_command
from mesh.host._sandbox import (
    Sandbox,
    SandboxUnavailable,
    find_sandbox,
    require_sandbox,
    seccomp_program,
)

from repo_helpers import survivors

pytestmark = pytest.mark.anyio

ROOT = Path(mesh.__file__).resolve().parent.parent
# Run as a module (not by path, not with -I -S) so that coverage measures it too.
REAPER = [sys.executable, "-m", "mesh.host._reaper"]
MISSING = (
    "bubblewrap (bwrap) is not on PATH: install it (Debian/Ubuntu: apt-get install bubblewrap)"
)

ESCAPES = {
    "setsid": "setsid sleep {m} & echo started; sleep {m}",
    "double fork": "( (sleep {m} &) & ); echo started; sleep {m}",
    "set -m job control": "bash -c 'set -m; sleep {m} & echo started; wait'",
    # Without the user's rc files: this machine's (pyenv's rehash) can outlast the timeout,
    # and a rehash killed half way leaves a lock that hangs every later interactive shell.
    "interactive shell on a pty": (
        "script -qec \"bash --norc -ic 'nohup sleep {m} >/dev/null 2>&1 & echo started; wait'\" "
        "/dev/null"
    ),
    "setsid child ignoring SIGTERM": "trap '' TERM; setsid sleep {m} & echo started; sleep {m}",
    "fork loop ignoring SIGTERM": (
        "trap '' TERM; (while :; do (setsid sleep {m} &); sleep 0.01; done) &"
        " echo started; sleep {m}"
    ),
}
# Those that do outlive a killed process group (a double fork stays in the group).
GROUP_ESCAPES = ("setsid", "set -m job control", "interactive shell on a pty")


def poll(predicate: Callable[[], bool], within: float = 10.0) -> bool:
    """Whether ``predicate`` comes true within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> bool:
    """Whether ``predicate`` comes true within ``within`` seconds, without blocking the loop."""
    with anyio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 - the process table sets no event to wait on
            await anyio.sleep(0.02)
        return True
    return False


def needs(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed")


def reaper_env(**extra: str) -> dict[str, str]:
    """The environment for a Python child that imports this checkout's mesh."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def start_reaper(*args: str, **options: object) -> subprocess.Popen[str]:
    """The reaper, run directly, with its output as text."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [*REAPER, *args], env=reaper_env(), text=True, **options
    )


def signal_pending(pid: int, number: int) -> bool:
    """Whether ``pid`` has signal ``number`` waiting to be handled."""
    bit = 1 << (number - 1)
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [line.split()[1] for line in status.splitlines() if line[:6] in {"SigPnd", "ShdPnd"}]
    return any(int(mask, 16) & bit for mask in masks)


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture(name="bwrap")
def _bwrap() -> str:
    """The working bwrap; the test skips without one, or fails if MESH_REQUIRE_SANDBOX=1."""
    found = find_sandbox()
    if found is None:
        try:
            require_sandbox()
        except SandboxUnavailable as exc:
            why = str(exc)
        if os.environ.get("MESH_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"MESH_REQUIRE_SANDBOX=1, but {why}")
        pytest.skip(why)
    return found


@pytest.fixture(name="fake_bwrap")
def _fake_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Put a ``bwrap`` script with this body first on PATH."""

    def install(body: str) -> Path:
        folder = tmp_path / f"bin{secrets.token_hex(4)}"
        folder.mkdir()
        script = folder / "bwrap"
        script.write_text(body)
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        return script

    return install


class TestReaper:
    """The reaper script on its own, as ``python -m mesh.host._reaper``."""

    @pytest.mark.parametrize(
        ("script", "expected"),
        [("exit 3", 3), ("exit 0", 0), ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 128 + 9)],
    )
    def test_exit_status(self, script: str, expected: int) -> None:
        """The reaper exits as the command did, 128+N when it died of signal N."""
        with start_reaper("--", "sh", "-c", script) as reaper:
            assert reaper.wait(timeout=30) == expected

    def test_leftovers_die_with_the_command(self, tmp_path: Path, marker: str) -> None:
        """When the command exits, every descendant it left is killed before the reaper exits."""
        script = (
            f"setsid sleep {marker} & ( (sleep {marker} &) & ); setsid sh -c 'sleep {marker}' &"
        )
        with start_reaper("--", "sh", "-c", f"{script} sleep 0.2; exit 5", cwd=tmp_path) as reaper:
            assert reaper.wait(timeout=30) == 5
        assert survivors(marker) == []

    @pytest.mark.parametrize(
        "args",
        [
            [],
            ["--"],
            ["true"],
            ["--grace", "soon", "--", "true"],
            ["--grace", "--", "true"],
            ["--bogus", "1", "--", "true"],
        ],
    )
    def test_usage(self, args: list[str]) -> None:
        """Arguments that do not parse: exit status 2 and the usage line."""
        with start_reaper(*args, stderr=subprocess.PIPE) as reaper:
            _, errors = reaper.communicate(timeout=30)
        assert (reaper.returncode, errors) == (2, f"{_reaper._USAGE}\n")

    @pytest.mark.parametrize(
        ("name", "mode", "expected"),
        [("missing", None, 127), ("plain", 0o644, 126)],
    )
    def test_cannot_run(self, tmp_path: Path, name: str, mode: int | None, expected: int) -> None:
        """A program that is missing exits 127, one that cannot execute 126, as in a shell."""
        program = tmp_path / name
        if mode is not None:
            program.write_text("not a program")
            program.chmod(mode)
        with start_reaper("--", str(program), stderr=subprocess.PIPE) as reaper:
            _, errors = reaper.communicate(timeout=30)
        assert reaper.returncode == expected
        assert errors.startswith(f"mesh: cannot run '{program}': ")

    def test_parent_already_gone(self, tmp_path: Path) -> None:
        """A reaper whose --parent is not its parent (that one died) does not start the command."""
        with start_reaper(
            "--parent", "1", "--", "touch", "ran", cwd=tmp_path, stderr=subprocess.PIPE
        ) as reaper:
            _, errors = reaper.communicate(timeout=30)
        assert (reaper.returncode, (tmp_path / "ran").exists()) == (1, False)
        assert "gone" in errors

    def test_sigterm_stops_the_subtree(self, tmp_path: Path, marker: str) -> None:
        """SIGTERM reaches every descendant; the reaper exits as the command died (143)."""
        script = f"setsid sleep {marker} & echo ready; sleep {marker}"
        with start_reaper("--", "sh", "-c", script, cwd=tmp_path, stdout=subprocess.PIPE) as reaper:
            assert reaper.stdout.readline() == "ready\n"  # type: ignore[union-attr]
            reaper.terminate()
            assert reaper.wait(timeout=30) == 128 + 15
        assert survivors(marker) == []

    def test_sigterm_ignored_means_sigkill_after_grace(self, tmp_path: Path, marker: str) -> None:
        """Descendants that ignore SIGTERM are SIGKILLed once the grace period is over."""
        script = f"trap '' TERM; setsid sleep {marker} & echo ready; sleep {marker}"
        with start_reaper(
            "--grace", "0.5", "--", "sh", "-c", script, cwd=tmp_path, stdout=subprocess.PIPE
        ) as reaper:
            assert reaper.stdout.readline() == "ready\n"  # type: ignore[union-attr]
            reaper.send_signal(signal.SIGINT)
            assert reaper.wait(timeout=30) == 128 + 9
        assert survivors(marker) == []

    def test_second_stop_signal_cuts_the_grace(self, tmp_path: Path, marker: str) -> None:
        """A second stop signal during the grace period means SIGKILL now, not after a minute."""
        script = f"trap 'echo term' TERM; echo ready; while :; do sleep 0.05; done # {marker}"
        with start_reaper(
            "--grace", "60", "--", "sh", "-c", script, cwd=tmp_path, stdout=subprocess.PIPE
        ) as reaper:
            assert reaper.stdout.readline() == "ready\n"  # type: ignore[union-attr]
            started = time.monotonic()
            reaper.terminate()
            # The shell has had its SIGTERM: the reaper is in the grace period.
            assert reaper.stdout.readline() == "term\n"  # type: ignore[union-attr]
            reaper.send_signal(signal.SIGHUP)
            assert reaper.wait(timeout=30) == 128 + 9
        assert time.monotonic() - started < 10
        assert survivors(marker) == []

    def test_two_stop_signals_at_once(self, tmp_path: Path, marker: str) -> None:
        """Two stop signals together (mesh's cancellation) skip the grace altogether."""
        script = f"trap '' TERM; echo ready; sleep {marker}"
        with start_reaper(
            "--grace", "60", "--", "sh", "-c", script, cwd=tmp_path, stdout=subprocess.PIPE
        ) as reaper:
            assert reaper.stdout.readline() == "ready\n"  # type: ignore[union-attr]
            started = time.monotonic()
            # Stopped, the reaper gets both signals in one go when it resumes.
            reaper.send_signal(signal.SIGSTOP)
            assert poll(lambda: stopped(reaper.pid))
            reaper.terminate()
            reaper.send_signal(signal.SIGHUP)
            reaper.send_signal(signal.SIGCONT)
            assert reaper.wait(timeout=30) == 128 + 9
        assert time.monotonic() - started < 10
        assert survivors(marker) == []

    def test_parent_death_stops_the_subtree(self, tmp_path: Path, marker: str) -> None:
        """When the process that started the reaper dies, the reaper stops the whole subtree."""
        script = f"setsid sleep {marker} & echo ready; sleep {marker}"
        starter = [
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.Popen(sys.argv[1:]); sys.stdin.read()",
            *REAPER,
            "--",
            "sh",
            "-c",
            script,
        ]
        with subprocess.Popen(
            starter,
            env=reaper_env(),
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdout.readline() == "ready\n"  # type: ignore[union-attr]
            assert len(survivors(marker)) >= 3  # the reaper, the shell, the setsid'd sleep
            process.kill()
        assert poll(lambda: not survivors(marker))

    def test_parent_thread_ending_is_not_parent_death(self, tmp_path: Path) -> None:
        """
        The parent *thread* ending (trio spawns from worker threads) does not stop the command.

        The kernel sends the reaper its parent-death signal then too; the reaper sees that
        its parent process lives on, and carries on.
        """
        started: list[subprocess.Popen[str]] = []
        native: list[int] = []

        def spawn() -> None:
            native.append(threading.get_native_id())
            reaper = start_reaper(
                "--",
                "sh",
                "-c",
                'echo ready; read line; echo "got $line"',
                cwd=tmp_path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            started.append(reaper)
            # Only once the command runs is the reaper listening for its parent's death.
            assert reaper.stdout.readline() == "ready\n"  # type: ignore[union-attr]

        thread = threading.Thread(target=spawn)
        thread.start()
        thread.join()
        with started[0] as reaper:
            assert poll(lambda: not Path(f"/proc/self/task/{native[0]}").exists())
            assert poll(lambda: not signal_pending(reaper.pid, signal.SIGUSR1))
            output, _ = reaper.communicate("still here\n", timeout=30)
        assert (reaper.returncode, output) == (0, "got still here\n")

    def test_descendants_from_parent_links(self, tmp_path: Path) -> None:
        """The subtree comes from ``stat`` parent links; vanished or garbled entries are skipped."""
        stats = {
            "1": "1 (init) S 0 1 1",
            "7": "7 (a (b) c) S 1 7 7",
            "8": "8 (leaf) S 7 7 7",
            "9": "9 (other) S 0 9 9",
            "10": "garbage",
        }
        for pid, stat in stats.items():
            (tmp_path / pid).mkdir()
            (tmp_path / pid / "stat").write_text(stat)
        (tmp_path / "11").mkdir()  # exited between listing and reading
        (tmp_path / "self").mkdir()
        assert sorted(_reaper._descendants(1, proc=str(tmp_path))) == [7, 8]

    def test_kill_reports_absence(self) -> None:
        """Signalling a pid that does not exist reports False instead of raising."""
        assert (_reaper._kill(2**30, 0), _reaper._kill(os.getpid(), 0)) == (False, True)


class TestRunCommandContainment:
    """run_command under the reaper: whatever the command starts ends with it."""

    @pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
    async def test_timeout_leaves_nothing(self, tmp_path: Path, marker: str, escape: str) -> None:
        """However a child left the process group, nothing is left once a timed-out call returns."""
        for program in ("bash", "script"):
            if program in escape:
                needs(program)
        result = await run_command(escape.format(m=marker), cwd=tmp_path, timeout=1.0)
        assert (result.timed_out, result.exit_code) == (True, None)
        assert "started" in result.output
        assert survivors(marker) == []

    @pytest.mark.parametrize("name", GROUP_ESCAPES)
    async def test_escapes_are_real(self, tmp_path: Path, marker: str, name: str) -> None:
        """Without the reaper (``contain=False``) these children do outlive the killed group."""
        command = ESCAPES[name].format(m=marker)
        for program in ("bash", "script"):
            if program in command:
                needs(program)
        result = await run_command(command, cwd=tmp_path, timeout=1.0, contain=False)
        assert (result.timed_out, result.exit_code) == (True, None)
        assert survivors(marker) != []

    async def test_escaped_child_holding_output(self, tmp_path: Path, marker: str) -> None:
        """A command that exits 0 while a setsid'd child holds its output open is ok, promptly."""
        started = anyio.current_time()
        result = await run_command(f"setsid sleep {marker} & echo done", cwd=tmp_path, timeout=60)
        assert anyio.current_time() - started < 10
        assert (
            result.ok,
            result.timed_out,
            result.exit_code,
            result.output,
        ) == (True, False, 0, "done\n")
        assert survivors(marker) == []

    async def test_escaped_child_holding_output_uncontained(
        self, tmp_path: Path, marker: str
    ) -> None:
        """Uncontained, the escaped child survives, but the call still returns ok, promptly."""
        started = anyio.current_time()
        result = await run_command(
            f"setsid sleep {marker} & echo done", cwd=tmp_path, timeout=60, contain=False
        )
        assert anyio.current_time() - started < 10
        assert (result.ok, result.output) == (True, "done\n")
        assert len(survivors(marker)) == 1

    async def test_cancellation_leaves_nothing(self, tmp_path: Path, marker: str) -> None:
        """Cancelling the caller kills the whole tree, setsid'd and job-controlled children too."""
        needs("bash")
        command = (
            f"setsid sleep {marker} & bash -c 'set -m; sleep {marker} & wait' &"
            f" ( (sleep {marker} &) & ); wait"
        )
        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(run_command, command, cwd=tmp_path, timeout=None))
            # The reaper, the shell, bash and three sleeps.
            assert await eventually(lambda: len(survivors(marker)) >= 6)
            group.cancel_scope.cancel()
        assert survivors(marker) == []
        assert anyio.current_time() - started < 15

    async def test_cancellation_uncontained(self, tmp_path: Path, marker: str) -> None:
        """Cancelling an uncontained command kills its process group at once."""
        async with anyio.create_task_group() as group:
            group.start_soon(
                functools.partial(
                    run_command, f"sleep {marker}", cwd=tmp_path, timeout=None, contain=False
                )
            )
            assert await eventually(lambda: len(survivors(marker)) >= 1)
            group.cancel_scope.cancel()
        assert await eventually(lambda: not survivors(marker))

    @pytest.mark.parametrize("contain", [False, True])
    async def test_cancelled_while_starting(
        self, tmp_path: Path, marker: str, *, contain: bool
    ) -> None:
        """A cancellation that lands while the process is being set up still ends it."""
        for delay in (0, 0.0005, 0.001, 0.002, 0.004, 0.008):
            with anyio.move_on_after(delay):
                await run_command(f"sleep {marker}", cwd=tmp_path, timeout=None, contain=contain)
        assert await eventually(lambda: not survivors(marker))

    async def test_term_ignored_uncontained(self, tmp_path: Path) -> None:
        """An uncontained command that ignores SIGTERM is SIGKILLed after the grace period."""
        result = await run_command(
            "trap '' TERM; echo ready; sleep 30", cwd=tmp_path, timeout=0.5, contain=False
        )
        assert (result.timed_out, result.exit_code, result.output) == (True, None, "ready\n")

    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_killed_caller_leaves_nothing(self, tmp_path: Path, marker: str, backend: str) -> None:
        """If the process that called run_command is SIGKILLed, the reaper ends the subtree."""
        script = (
            "import functools, os, sys, anyio; from mesh.host._process import run_command;"
            " anyio.run(functools.partial(run_command, os.environ['COMMAND'],"
            " cwd=sys.argv[1], timeout=None), backend=sys.argv[2])"
        )
        with subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), backend],
            env=reaper_env(COMMAND=f"setsid sleep {marker} & sleep {marker}"),
        ) as caller:
            try:
                # The reaper, the shell and both sleeps.
                assert poll(lambda: len(survivors(marker)) >= 4)
            finally:
                caller.kill()
        assert poll(lambda: not survivors(marker))

    async def test_unread_input(self, tmp_path: Path) -> None:
        """A command that exits without reading all its input is not an error."""
        result = await run_command("exit 0", cwd=tmp_path, timeout=30, stdin=b"x" * 1_000_000)
        assert (result.ok, result.output) == (True, "")

    async def test_missing_program(self, tmp_path: Path) -> None:
        """An argv naming no program raises FileNotFoundError, as a direct start does."""
        with pytest.raises(FileNotFoundError):
            await run_command(["surely-no-such-program-here"], cwd=tmp_path, timeout=30)
        with pytest.raises(FileNotFoundError):
            await run_command(["./missing"], cwd=tmp_path, timeout=30)

    async def test_program_found_on_path_and_relative(self, tmp_path: Path) -> None:
        """An argv runs a program from PATH, or one relative to ``cwd``."""
        script = tmp_path / "hello"
        script.write_text("#!/bin/sh\necho hello from $0\n")
        script.chmod(0o755)
        found = await run_command(["echo", "hi"], cwd=tmp_path, timeout=30)
        relative = await run_command(["./hello"], cwd=tmp_path, timeout=30)
        assert (found.output, relative.output) == ("hi\n", "hello from ./hello\n")


class TestSandbox:
    """Commands inside bubblewrap: read-only system, private TMPDIR, own pid namespace."""

    async def test_writes_confined(self, tmp_path: Path, bwrap: str, marker: str) -> None:
        """Only cwd and the writable paths can be written; not $HOME, not another folder."""
        work, extra, more = tmp_path / "work", tmp_path / "extra", tmp_path / "more"
        for folder in (work, extra, more):
            folder.mkdir()
        outside = Path(tempfile.mkdtemp(dir="/var/tmp"))
        home = Path.home() / f".mesh-sandbox-{marker}"
        try:
            result = await run_command(
                'touch inside "$EXTRA/x" "$MORE/y" && echo writable;'
                ' touch "$OUTSIDE/x" || echo outside-refused;'
                ' touch "$HOME_PROBE" || echo home-refused',
                cwd=work,
                timeout=30,
                env={
                    **os.environ,
                    "EXTRA": str(extra),
                    "MORE": str(more),
                    "OUTSIDE": str(outside),
                    "HOME_PROBE": str(home),
                },
                merge_stderr=False,
                sandbox=Sandbox(writable=(str(extra),)),
                writable=["../more"],
            )
            created = [path.exists() for path in (work / "inside", extra / "x", more / "y")]
            refused = [(outside / "x").exists(), home.exists()]
        finally:
            shutil.rmtree(outside)
            home.unlink(missing_ok=True)
        assert (
            result.output,
            result.exit_code,
        ) == ("writable\noutside-refused\nhome-refused\n", 0)
        assert "Read-only file system" in result.errors
        assert (created, refused) == ([True, True, True], [False, False])

    async def test_no_capabilities_even_as_root(
        self, tmp_path: Path, bwrap: str, marker: str
    ) -> None:
        """A command run by root keeps no capability: it cannot remount the system writable."""
        outside = Path(tempfile.mkdtemp(dir="/var/tmp"))
        try:
            result = await run_command(
                "grep CapEff /proc/self/status; mount -o remount,bind,rw / 2>/dev/null;"
                " umount -l /tmp 2>/dev/null;"
                f' touch "{outside}/escaped" 2>/dev/null || echo refused',
                cwd=tmp_path,
                timeout=30,
                sandbox=Sandbox(),
            )
            escaped = (outside / "escaped").exists()
        finally:
            shutil.rmtree(outside)
        assert result.output == "CapEff:\t0000000000000000\nrefused\n"
        assert not escaped

    async def test_a_private_temporary_folder(
        self, tmp_path: Path, bwrap: str, marker: str
    ) -> None:
        """The host's /tmp is seen read-only; TMPDIR is the command's own, removed afterwards."""
        host = Path(f"/tmp/mesh-host-{marker}")  # noqa: S108 - the point is the host's /tmp
        host.write_text("host\n")
        try:
            result = await run_command(
                f"cat {host}; touch /tmp/mesh-inner-{marker} 2>/dev/null || echo refused;"
                ' touch "$TMPDIR/mine" && echo written; echo "$TMPDIR"; pwd',
                cwd=tmp_path,
                timeout=30,
                sandbox=Sandbox(),
            )
        finally:
            host.unlink()
        seen, refused, written, private, where = result.output.splitlines()
        assert (seen, refused, written, where) == ("host", "refused", "written", str(tmp_path))
        assert Path(private).parent.name.startswith("mesh-sandbox-")
        assert not Path(private).parent.exists()
        assert not Path(f"/tmp/mesh-inner-{marker}").exists()  # noqa: S108

    async def test_no_network(self, tmp_path: Path, bwrap: str) -> None:
        """``network=False`` leaves only the loopback interface; the default keeps the host's."""

        async def interfaces(sandbox: Sandbox) -> list[str]:
            result = await run_command(
                "cat /proc/net/dev", cwd=tmp_path, timeout=30, sandbox=sandbox
            )
            return [line.split(":")[0].strip() for line in result.output.splitlines()[2:]]

        host = [
            line.split(":")[0].strip()
            for line in Path("/proc/net/dev").read_text().splitlines()[2:]
        ]
        assert (["lo"], sorted(host)) == (
            await interfaces(Sandbox(network=False)),
            sorted(await interfaces(Sandbox())),
        )

    async def test_pid_namespace(self, tmp_path: Path, bwrap: str, marker: str) -> None:
        """Even without the reaper, a setsid'd child cannot outlive a sandboxed command."""
        result = await run_command(
            f"setsid sleep {marker} & echo $$",
            cwd=tmp_path,
            timeout=30,
            contain=False,
            sandbox=Sandbox(),
        )
        assert result.ok
        assert int(result.output) < 10  # numbered inside its own namespace
        assert survivors(marker) == []

    async def test_sandbox_and_reaper_timeout(
        self, tmp_path: Path, bwrap: str, marker: str
    ) -> None:
        """A sandboxed command under the reaper times out and leaves nothing behind."""
        result = await run_command(
            ["sh", "-c", f"trap '' TERM; setsid sleep {marker} & echo started; sleep {marker}"],
            cwd=tmp_path,
            timeout=1.0,
            sandbox=Sandbox(network=False),
        )
        assert (result.timed_out, result.output) == (True, "started\n")
        assert survivors(marker) == []

    def test_detect(self, bwrap: str) -> None:
        """Where bubblewrap works, detect() gives the sandbox asked for."""
        assert Sandbox(network=False, writable=("/x",)) == Sandbox.detect(
            network=False, writable=("/x",)
        )
        assert bwrap == require_sandbox()

    def test_prefix(self) -> None:
        """The argv: read-only root, then the writable binds, the private TMPDIR last."""
        sandbox = Sandbox(network=False, writable=("cache", "/abs"))
        # fmt: off
        assert sandbox.prefix(
            "/w", writable=[Path("out")], bwrap="/usr/bin/bwrap", tmp="/t/mine"
        ) == [
            "/usr/bin/bwrap",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--bind", "/w", "/w",
            "--bind", "/w/cache", "/w/cache",
            "--bind", "/abs", "/abs",
            "--bind", "/w/out", "/w/out",
            "--bind", "/t/mine", "/t/mine",
            "--chdir", "/w", "--setenv", "TMPDIR", "/t/mine",
            "--cap-drop", "ALL",
            "--unshare-pid", "--die-with-parent", "--new-session", "--unshare-net", "--",
        ]
        # fmt: on
        assert "--unshare-net" not in Sandbox().prefix("/w")
        # A filter comes through a shell that opens it as descriptor 3 for bwrap.
        filtered = Sandbox().prefix("/w", bwrap="bwrap", seccomp="/t/filter")
        # fmt: off
        assert filtered == [
            "/bin/sh", "-c", 'exec "$@" 3<"$0"', "/t/filter",
            "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--seccomp", "3",
            "--bind", "/w", "/w", "--chdir", "/w",
            "--cap-drop", "ALL", "--unshare-pid", "--die-with-parent", "--new-session", "--",
        ]
        # fmt: on

    async def test_unix_sockets_refused(self, tmp_path: Path, bwrap: str) -> None:
        """
        A listening Unix socket outside (tmux's, an ssh agent's) cannot be reached.

        Creating a Unix socket fails; socketpair and network sockets work.
        """
        if seccomp_program() is None:
            pytest.skip(f"no seccomp filter for {platform.machine()}")
        path = tmp_path / "server.sock"
        accepted: list[bytes] = []
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            server.listen()
            server.settimeout(0.1)

            def serve() -> None:
                with contextlib.suppress(OSError):
                    while True:
                        try:
                            connection, _ = server.accept()
                        except TimeoutError:
                            continue
                        with connection:
                            accepted.append(connection.recv(100))

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            connect = (
                "import socket, sys\n"
                "a, b = socket.socketpair(); a.sendall(b'x'); assert b.recv(1) == b'x'\n"
                "socket.socket(socket.AF_INET).close(); socket.socket(socket.AF_INET6).close()\n"
                "try:\n"
                "    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                "except PermissionError:\n"
                "    print('datagram refused')\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.connect(sys.argv[1]); s.sendall(b'run this outside'); print('connected')\n"
            )
            refused = await run_command(
                [sys.executable, "-c", connect, str(path)],
                cwd=tmp_path,
                timeout=30,
                merge_stderr=False,
                sandbox=Sandbox(),
            )
            allowed = await run_command(
                [sys.executable, "-c", connect.replace("SOCK_DGRAM", "SOCK_STREAM"), str(path)],
                cwd=tmp_path,
                timeout=30,
                merge_stderr=False,
                sandbox=Sandbox(unix_sockets=True),
            )
            assert poll(lambda: len(accepted) == 1)
            server.close()
            thread.join()
        assert (refused.exit_code, refused.output) == (1, "datagram refused\n")
        assert "PermissionError: [Errno 13]" in refused.errors
        assert (allowed.exit_code, allowed.output) == (0, "connected\n")
        assert accepted == [b"run this outside"]

    async def test_datagram_pairs_refused(self, tmp_path: Path, bwrap: str) -> None:
        """
        A datagram socketpair could be aimed at any socket outside (``sendto``): refused.

        The attack is built for real: a datagram service outside, and a sandboxed
        command that sends to it from a pair; stream pairs keep working.
        """
        if seccomp_program() is None:
            pytest.skip(f"no seccomp filter for {platform.machine()}")
        path = tmp_path / "log.sock"
        attack = (
            "import socket, sys\n"
            "for kind in ('SOCK_DGRAM', 'SOCK_SEQPACKET', 'SOCK_RAW'):\n"
            "    try:\n"
            "        a, b = socket.socketpair(socket.AF_UNIX, getattr(socket, kind))\n"
            "    except OSError as exc:\n"
            "        print(kind, exc.errno)\n"
            "        continue\n"
            "    a.sendto(b'reached ' + kind.encode(), sys.argv[1])\n"
            "a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)\n"
            "a.sendall(b'x'); print('stream', b.recv(1).decode())\n"
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as service:
            service.bind(str(path))
            service.settimeout(0)
            sandboxed = await run_command(
                [sys.executable, "-c", attack, str(path)],
                cwd=tmp_path,
                timeout=30,
                merge_stderr=False,
                sandbox=Sandbox(),
            )
            unfiltered = await run_command(
                [sys.executable, "-c", attack, str(path)],
                cwd=tmp_path,
                timeout=30,
                merge_stderr=False,
                sandbox=Sandbox(unix_sockets=True),
            )
            received = []
            with contextlib.suppress(BlockingIOError, TimeoutError):
                while True:
                    received.append(service.recv(100))
        refused = "".join(
            f"{kind} {errno.EACCES}\n" for kind in ("SOCK_DGRAM", "SOCK_SEQPACKET", "SOCK_RAW")
        )
        assert (sandboxed.exit_code, sandboxed.output) == (0, refused + "stream x\n")
        # The control: without the filter the same command reaches the service.
        assert unfiltered.exit_code == 0, unfiltered.errors
        assert received == [
            b"reached SOCK_DGRAM",
            b"reached SOCK_RAW",
        ]  # the kernel takes RAW as DGRAM

    async def test_io_uring_absent(self, tmp_path: Path, bwrap: str) -> None:
        """io_uring, which could open sockets past the filter, is not there at all."""
        if seccomp_program() is None:
            pytest.skip(f"no seccomp filter for {platform.machine()}")
        probe = (
            "import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "for number in (425, 426, 427):\n"
            "    print(libc.syscall(number, 0, 0, 0, 0, 0), os.strerror(ctypes.get_errno()))\n"
        )
        result = await run_command(
            [sys.executable, "-c", probe],
            cwd=tmp_path,
            timeout=30,
            merge_stderr=False,
            sandbox=Sandbox(),
        )
        assert result.output == "-1 Function not implemented\n" * 3


def run_filter(program: bytes, *, arch: int, number: int, first: int = 0, second: int = 0) -> int:
    """What the kernel would decide: classic BPF run over one system call's seccomp_data."""
    data = struct.pack("=iIQ6Q", number, arch, 0, first, second, 0, 0, 0, 0)
    steps: list[tuple[int, int, int, int]] = [
        struct.unpack("=HBBI", program[at : at + 8]) for at in range(0, len(program), 8)
    ]
    accumulator, index = 0, 0
    while True:
        code, true, false, k = steps[index]
        if code == 0x20:  # load a word of seccomp_data
            (accumulator,) = struct.unpack_from("=I", data, k)
            index += 1
        elif code in {0x15, 0x35}:  # jump if equal / if greater or equal
            taken = accumulator == k if code == 0x15 else accumulator >= k
            index += 1 + (true if taken else false)
        elif code == 0x54:  # and a constant into the accumulator
            accumulator &= k
            index += 1
        else:
            assert code == 0x06  # return
            return k


ALLOW, KILL = 0x7FFF0000, 0x80000000
EACCES, ENOSYS = 0x50000 | 13, 0x50000 | 38


class TestSeccompFilter:
    """Every decision of the filter, for each machine it is written for."""

    @pytest.mark.parametrize(
        ("machine", "arch", "socket_number", "foreign"),
        [
            ("x86_64", 0xC000003E, 41, 0x40000003),  # i386's arch for int 0x80
            ("aarch64", 0xC00000B7, 198, 0x40000028),  # 32-bit ARM's
        ],
    )
    def test_decisions(self, machine: str, arch: int, socket_number: int, foreign: int) -> None:
        """socket(AF_UNIX) refused, other families allowed, io_uring absent, foreign calls end."""
        program = seccomp_program(machine)
        assert program is not None
        decide = functools.partial(run_filter, program, arch=arch)
        assert decide(number=socket_number, first=socket.AF_UNIX) == EACCES
        for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
            assert decide(number=socket_number, first=family) == ALLOW
        # Only the low half of the family counts, as the kernel reads an int.
        assert decide(number=socket_number, first=(1 << 32) | socket.AF_UNIX) == EACCES
        assert [decide(number=number) for number in (425, 426, 427)] == [ENOSYS] * 3
        assert [decide(number=number) for number in (0, 1, 59, 60, 221, 424, 428)] == [ALLOW] * 7
        # Another architecture's calls (the 32-bit socketcall route) end the process.
        assert run_filter(program, arch=foreign, number=102, first=1) == KILL
        assert run_filter(program, arch=foreign, number=socket_number) == KILL

    @pytest.mark.parametrize(("machine", "arch", "number"), [
        ("x86_64", 0xC000003E, 53), ("aarch64", 0xC00000B7, 199),
    ])  # fmt: skip
    def test_socketpair_decisions(self, machine: str, arch: int, number: int) -> None:
        """Unix pairs: stream ones only, whatever flags ride in the type; other families too."""
        program = seccomp_program(machine)
        assert program is not None
        decide = functools.partial(run_filter, program, arch=arch, number=number)
        stream, flags = socket.SOCK_STREAM, socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        assert decide(first=socket.AF_UNIX, second=stream) == ALLOW
        assert decide(first=socket.AF_UNIX, second=stream | flags) == ALLOW
        for kind in (socket.SOCK_DGRAM, socket.SOCK_SEQPACKET, socket.SOCK_RAW, 0, 15):
            assert decide(first=socket.AF_UNIX, second=kind | flags) == EACCES
        # The kernel reads ints: high halves change nothing.
        assert decide(first=(1 << 32) | socket.AF_UNIX, second=socket.SOCK_DGRAM) == EACCES
        assert decide(first=socket.AF_UNIX, second=(1 << 32) | socket.SOCK_DGRAM) == EACCES
        assert decide(first=socket.AF_INET, second=socket.SOCK_DGRAM) == ALLOW

    def test_x32_calls_end_the_process(self) -> None:
        """x86-64 takes x32 calls (bit 30 set) from 64-bit processes: none are allowed."""
        program = seccomp_program("x86_64")
        assert program is not None
        for number in (0x40000000 + 41, 0x40000000, 0x7FFFFFFF):
            assert run_filter(program, arch=0xC000003E, number=number, first=1) == KILL

    def test_other_machines(self) -> None:
        """No filter is written for them: the sandbox runs without one, and says so."""
        assert seccomp_program("riscv64") is None
        assert seccomp_program("amd64") == seccomp_program("x86_64")
        assert seccomp_program("arm64") == seccomp_program("aarch64")
        assert Sandbox(unix_sockets=True).seccomp is None
        assert Sandbox().seccomp == seccomp_program()


class TestSandboxUnavailable:
    """What mesh says when bubblewrap is missing or cannot work here."""

    async def test_not_on_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without bwrap on PATH: one line saying what to install, from every entry point."""
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(SandboxUnavailable) as raised:
            await run_command("true", cwd=tmp_path, timeout=30, sandbox=Sandbox())
        assert (str(raised.value), raised.value.code) == (MISSING, FailureCode.TOOLING_UNAVAILABLE)
        assert isinstance(raised.value, MeshError)
        assert (find_sandbox(), Sandbox.detect()) == (None, None)

    @pytest.mark.parametrize(
        ("body", "detail"),
        [
            (
                "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2; exit 1\n",
                "bwrap: setting up uid map: Permission denied",
            ),
            ("#!/bin/sh\nexit 3\n", "exit code 3"),
            ("#!/nonexistent/interpreter\n", "No such file or directory"),
        ],
    )
    def test_bwrap_that_fails(
        self, fake_bwrap: Callable[[str], Path], body: str, detail: str
    ) -> None:
        """A bwrap that cannot make a sandbox: its own complaint, and what must be allowed."""
        script = fake_bwrap(body)
        with pytest.raises(SandboxUnavailable) as raised:
            require_sandbox()
        message = str(raised.value)
        assert message.startswith(f"bubblewrap ({script}) cannot create a sandbox here: ")
        assert detail in message
        assert "unprivileged user namespaces (and seccomp) must be allowed" in message
        assert "\n" not in message
        assert (find_sandbox(), Sandbox.detect()) == (None, None)
