"""One owner per run; what a dead owner left running is ended; git locks whose writer is gone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_resume import CODER, PLAN
from test_trust_boundary import TestCommitsADeadProcessLeft

import mesh
import mesh.commands
from mesh.git._git import safe_git_environment
from mesh.host._owner import (
    OWNER_FILE,
    OwnerRecord,
    RunOwned,
    RunOwnership,
    end_leftovers,
    pid_alive,
    stale_locks,
)
from mesh.host._process import run_command

from repo_helpers import git, killed_after_the_branch_moved

pytestmark = pytest.mark.anyio

HOLD = (
    "import sys, time\n"
    "from mesh.host._owner import RunOwnership\n"
    "owned = RunOwnership.acquire(sys.argv[1])\n"
    "print('owned', flush=True)\n"
    "time.sleep(600)\n"
)


def hold(folder: Path) -> subprocess.Popen[str]:
    """Another process that owns the run in ``folder`` until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "owned\n"
    return holder


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = hold(tmp_path / "out")
    yield process
    process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


class TestOneOwner:
    def test_a_second_owner_is_refused_naming_the_first(
        self, tmp_path: Path, holder: subprocess.Popen[str]
    ) -> None:
        """While a process owns a run, a second is refused at once, told who owns it."""
        with pytest.raises(RunOwned) as refused:
            RunOwnership.acquire(tmp_path / "out")
        message = str(refused.value)
        assert f"is owned by process {holder.pid} on {socket.gethostname()} since " in message
        assert message.endswith("(`mesh status` works meanwhile)")
        assert refused.value.code is mesh.FailureCode.TOOLING_UNAVAILABLE

    def test_in_one_process_too(self, tmp_path: Path) -> None:
        """Two owners in one process (two library resumes) are refused just the same."""
        with RunOwnership.acquire(tmp_path) as first:
            with pytest.raises(RunOwned, match=f"process {os.getpid()} "):
                RunOwnership.acquire(tmp_path)
            assert first.previous is None
        with RunOwnership.acquire(tmp_path) as second:
            assert second.previous == first.record  # released: the next one owns it

    def test_a_killed_owner_lets_go(self, tmp_path: Path) -> None:
        """Kill -9 of the owner: the next one owns the run at once and knows who was before."""
        process = hold(tmp_path)
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
        with RunOwnership.acquire(tmp_path) as owned:
            assert owned.previous is not None
            assert owned.previous.pid == process.pid

    def test_a_record_written_halfway(self, tmp_path: Path) -> None:
        """An owner killed while writing its record: nobody to name, nothing in the way."""
        (tmp_path / OWNER_FILE).write_text('{"pid": 12')
        with RunOwnership.acquire(tmp_path) as owned:
            assert owned.previous is None
            record = json.loads((tmp_path / OWNER_FILE).read_text())
            assert record["pid"] == os.getpid()

    def test_refused_before_the_owner_wrote_its_record(self, tmp_path: Path) -> None:
        """Refused while the holder's record still names a dead owner: it never names the dead."""
        with RunOwnership.acquire(tmp_path):
            dead = subprocess.run(
                [sys.executable, "-c", "import os; print(os.getpid())"],
                capture_output=True,
                text=True,
                check=True,
            )
            stale = {
                "pid": int(dead.stdout),
                "host": socket.gethostname(),
                "started": 1.0,
                "token": "t",
                "inherited": [],
            }
            (tmp_path / OWNER_FILE).write_text(json.dumps(stale))
            with pytest.raises(RunOwned, match="is owned by another process: wait"):
                RunOwnership.acquire(tmp_path)

    def test_refused_by_an_owner_on_another_host(self, tmp_path: Path) -> None:
        """A record from another host (a shared folder) is named as it is."""
        with RunOwnership.acquire(tmp_path):
            other = {"pid": 1, "host": "elsewhere", "started": 1.0, "token": "t", "inherited": []}
            (tmp_path / OWNER_FILE).write_text(json.dumps(other))
            with pytest.raises(RunOwned, match="is owned by process 1 on elsewhere since"):
                RunOwnership.acquire(tmp_path)

    def test_another_users_process_is_alive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A pid that may not be signalled (another user's) is a live process."""

        def refuse(pid: int, number: int) -> None:
            raise PermissionError(pid, number)

        monkeypatch.setattr(os, "kill", refuse)
        assert pid_alive(12345)

    def test_released_twice_or_never_entered(self, tmp_path: Path) -> None:
        """Letting go is idempotent, entered or not."""
        owned = RunOwnership.acquire(tmp_path)
        owned.release()
        owned.release()
        owned.__exit__(None, None, None)
        with RunOwnership.acquire(tmp_path):
            pass

    async def test_resuming_nothing(self, tmp_path: Path) -> None:
        """No store there: said at once, and no folder or owner file is made."""
        with pytest.raises(mesh.StoreError, match="no run store there"):
            await mesh.resume_async(
                tmp_path / "none", roles=mesh.Roles(coder=mesh.ScriptedCoder(tmp_path, {}))
            )
        assert not (tmp_path / "none").exists()

    def test_a_folder_that_cannot_be_made(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(mesh.MeshError, match="cannot own the run in"):
            RunOwnership.acquire(tmp_path / "file" / "out")

    async def test_every_process_started_carries_the_owner(self, tmp_path: Path) -> None:
        """Commands and git alike carry the token the next owner looks for."""
        with RunOwnership.acquire(tmp_path) as owned:
            token = owned.record.token
            shown = await run_command(
                'echo "$MESH_RUN_OWNER"', cwd=tmp_path, timeout=30, env={"PATH": os.defpath}
            )
            assert shown.output == f"{token}\n"
            assert safe_git_environment()["MESH_RUN_OWNER"] == token
        assert "MESH_RUN_OWNER" not in safe_git_environment()

    def test_run_and_resume_refuse_an_owned_run(
        self, tmp_path: Path, repo: Path, holder: subprocess.Popen[str]
    ) -> None:
        """`mesh run` and `mesh resume` refuse before any work; `mesh status` answers."""
        out = tmp_path / "out"
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps(PLAN))
        run = subprocess.run(
            [sys.executable, "-m", "mesh", "run", str(plan), "--repo", str(repo),
             "--out", str(out), "--coder-command", CODER],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert run.returncode != 0
        assert run.stderr.count("\n") == 1, run.stderr
        assert f"is owned by process {holder.pid}" in run.stderr
        assert not (out / "run.sqlite").exists()
        assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE]
        # A run store there, still owned: resume refuses too; status reads it.
        mesh.RunStore.create(out / "run.sqlite", run_id="r1", config={"plan": PLAN}).close()
        resumed = subprocess.run(
            [sys.executable, "-m", "mesh", "resume", str(out)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert resumed.returncode != 0
        assert f"is owned by process {holder.pid}" in resumed.stderr
        assert resumed.stderr.count("\n") == 1, resumed.stderr
        assert mesh.commands.status(run=out)["run_id"] == "r1"


LEAVE = (
    "import os, subprocess, sys, time\n"
    "from mesh.host._owner import RunOwnership\n"
    "owned = RunOwnership.acquire(sys.argv[1])\n"
    "if len(sys.argv) > 2:  # start a child that outlives this owner\n"
    "    env = {**os.environ, 'MESH_RUN_OWNER': owned.record.token}\n"
    "    print(subprocess.Popen(['sleep', '600'], env=env).pid, flush=True)\n"
    "else:\n"
    "    print('owned', flush=True)\n"
    "time.sleep(600)\n"
)


def owner_killed(folder: Path, *, leave_child: bool) -> int | None:
    """A process that owns the run (and leaves a child running), killed -9; the child's pid."""
    extra = ["child"] if leave_child else []
    with subprocess.Popen(
        [sys.executable, "-c", LEAVE, str(folder), *extra], stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        line = owner.stdout.readline().strip()
        owner.kill()
    return int(line) if leave_child else None


class TestLeftovers:
    async def test_an_owner_killed_before_it_ended_the_leftovers_hands_them_on(
        self, tmp_path: Path
    ) -> None:
        """A leaves a child; B takes over and is killed at once; C still ends A's child."""
        child = owner_killed(tmp_path, leave_child=True)
        assert child is not None
        owner_killed(tmp_path, leave_child=False)
        try:
            with RunOwnership.acquire(tmp_path) as owned:
                assert len(owned.record.inherited) == 2
                assert child in await owned.settle(grace=0.5)
                assert json.loads((tmp_path / OWNER_FILE).read_text())["inherited"] == []
                assert await owned.settle() == []
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        assert (
            not Path(f"/proc/{child}").exists()
            or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
        )

    def test_a_deleted_owner_file_does_not_make_two_owners(self, tmp_path: Path) -> None:
        """The owner file removed by hand while the run lives: its store's lock still refuses."""
        store = tmp_path / "run.sqlite"
        mesh.RunStore.create(store, run_id="r1", config={}).close()
        with RunOwnership.acquire(tmp_path) as first:
            first.hold_store(store)
            (tmp_path / OWNER_FILE).unlink()
            with (
                RunOwnership.acquire(tmp_path) as second,
                pytest.raises(RunOwned, match=r"its store run\.sqlite is locked"),
            ):
                second.hold_store(store)
        with RunOwnership.acquire(tmp_path) as third:
            third.hold_store(store)
            third.hold_store(tmp_path / "missing.sqlite")  # nothing to lock: opening says so


class TestWhatDeadOwnersLeft:
    async def test_what_a_dead_owner_left_running_is_ended(self, tmp_path: Path) -> None:
        """Its children, even one that ignores SIGTERM, are ended before the next owner works."""
        record = OwnerRecord(pid=1, host="h", started=0.0, token="t" * 32)
        environment = {**os.environ, "MESH_RUN_OWNER": record.token}
        polite = subprocess.Popen(["sleep", "600"], env=environment)
        stubborn = subprocess.Popen(
            ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline() == "ready\n"
        stranger = subprocess.Popen(["sleep", "600"])
        try:
            ended = await end_leftovers([record.token], grace=0.5)
            assert set(ended) >= {polite.pid, stubborn.pid}
            assert polite.wait(timeout=5) == -signal.SIGTERM
            assert stubborn.wait(timeout=5) == -signal.SIGKILL
            assert stranger.poll() is None  # not the dead owner's: left alone
        finally:
            for process in (polite, stubborn, stranger):
                process.kill()
                process.wait()
            stubborn.stdout.close()
        assert await end_leftovers([record.token]) == []
        assert await end_leftovers([]) == []


class TestStaleLocks:
    def test_a_lock_held_open_is_not_stale(self, tmp_path: Path) -> None:
        held, left, absent = tmp_path / "held.lock", tmp_path / "left.lock", tmp_path / "no.lock"
        held.write_text("")
        left.write_text("")
        opener = "import sys, time; f = open(sys.argv[1]); print(1, flush=True); time.sleep(600)"
        with subprocess.Popen(
            [sys.executable, "-c", opener, str(held)], stdout=subprocess.PIPE, text=True
        ) as holder:
            assert holder.stdout is not None
            holder.stdout.readline()
            assert stale_locks([held, left, absent]) == [left]
            holder.kill()
        assert stale_locks([held, left, absent]) == [held, left]
        assert stale_locks([absent]) == []

    async def test_locks_a_killed_delivery_left_are_cleared_on_resume(
        self, repo: Path, workspaces: mesh.WorkspaceManager, tmp_path: Path
    ) -> None:
        """
        Killed while update-ref held the branch and HEAD: the resume delivers.

        A lock some live process holds stays, and the delivery says so.
        """
        baseline = await TestCommitsADeadProcessLeft.baseline(repo)
        first = TestCommitsADeadProcessLeft.request(repo, "run/a", "VALUE = 2\n")
        tip = await killed_after_the_branch_moved(workspaces, tmp_path, first)
        locks = [repo / ".git" / "refs" / "heads" / "main.lock", repo / ".git" / "HEAD.lock"]
        for lock in locks:
            lock.write_text(f"{tip}\n")
        integrator = mesh.GitIntegrator(workspaces, artifacts=tmp_path / "out")
        await integrator.recover(baseline, pending={"run/a": first})
        assert not any(lock.exists() for lock in locks)
        second = TestCommitsADeadProcessLeft.request(repo, "run/b", "VALUE = 3\n")
        index_lock = repo / ".git" / "index.lock"
        index_lock.write_text("")
        with index_lock.open():  # a live writer: this process
            await integrator.recover(baseline, pending={"run/a": first})
            assert index_lock.exists()
            blocked = mesh.parse_worker_result(await integrator(second))
            assert blocked.decision is mesh.Decision.BLOCKED_DELIVERY
            assert "index.lock" in blocked.proof_evidence.key_line
        index_lock.unlink()
        delivered = mesh.parse_worker_result(await integrator(second))
        assert delivered.decision is mesh.Decision.INTEGRATED_COMMIT
        assert git(repo, "status", "--porcelain") == ""
