"""
kill -9 at named moments: inside git (a ref lock held), during a resume, two resumes racing.

Each ends like one uninterrupted run: the same tree and commits, every delivery
once, every unit completed, the plan state and the ledger whole. The random-point
harness is `test_resume.TestCrashHarness` (``MESH_CRASH_KILLS`` sets its count).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_resume import CODER, PLAN, events_written, history, start_run

import mesh
import mesh.commands

from repo_helpers import make_repo

# A git that pauses in one subcommand, as a slow disk or a slow hook would, after saying
# so in a marker file; for update-ref it holds the branch's lock meanwhile, as git does.
SLOW_GIT = """#!/bin/sh
case " $* " in
  *" $MESH_TEST_MATCH "*) ;;
  *) exec "$REAL_GIT" "$@" ;;
esac
for argument in "$@"; do
  if [ "$argument" = "$MESH_TEST_SLOW" ] && [ ! -e "$MESH_TEST_MARKER" ]; then
    if [ "$argument" = update-ref ]; then
      common=$("$REAL_GIT" rev-parse --git-common-dir)
      exec 9> "$common/refs/heads/main.lock"
    fi
    echo "$$" > "$MESH_TEST_MARKER"
    sleep 60
    exit 1
  fi
done
exec "$REAL_GIT" "$@"
"""


Expected = tuple[tuple[str, list[str], list[str]], object]
"""One run's history (tree, patch ids, delivery keys) and the plan state it wrote."""
Reference = tuple[Path, Path, Expected]
"""The plan, a template repository, and what one uninterrupted run makes of them."""


def slow_git_environment(tmp_path: Path, subcommand: str, match: str) -> dict[str, str]:
    """Where git pauses in ``subcommand`` (its first call that names ``match`` too)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "git"
    wrapper.write_text(SLOW_GIT)
    wrapper.chmod(0o755)
    real = shutil.which("git")
    assert real is not None
    return {
        **os.environ,
        "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
        "REAL_GIT": real,
        "MESH_TEST_SLOW": subcommand,
        "MESH_TEST_MATCH": match,
        "MESH_TEST_MARKER": str(tmp_path / "paused"),
    }


def resume(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", "resume", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The plan, a template repository, and what one uninterrupted run makes of them."""
    folder = tmp_path_factory.mktemp("reference")
    plan = folder / "plan.json"
    plan.write_text(json.dumps(PLAN))
    template = make_repo(folder / "template", {"src/keep": "x\n"})
    repo = folder / "run" / "repo"
    shutil.copytree(template, repo, symlinks=True)
    assert start_run(repo, folder / "run" / "out", plan).wait(timeout=180) == 0
    plan_state = json.loads((folder / "run" / "out" / "plan.json").read_text())
    return plan, template, (history(repo), plan_state)


def assert_like_the_reference(work: Path, expected: Expected) -> None:
    """Nothing lost, nothing twice, nothing stuck, nothing redone; state written is the truth."""
    (tree, patches, keys), reference_plan = expected
    assert history(work / "repo")[:2] == (tree, patches)
    assert sorted(history(work / "repo")[2]) == sorted(keys)  # each delivered once
    status = mesh.commands.status(run=work / "out")
    assert status["by_state"] == {"completed": len(PLAN["plan"])}, status
    assert json.loads((work / "out" / "plan.json").read_text()) == reference_plan
    with mesh.RunStore.open(work / "out" / "run.sqlite") as store:
        stored = [event.seq for event in store.events()]
    lines = (work / "out" / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == stored == list(range(1, len(stored) + 1))
    assert (work / "repo" / ".git" / "refs" / "heads" / "main.lock").exists() is False


def wait_for(condition: object, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def killed_after(tmp_path: Path, reference: Reference, events: int) -> Path:
    """The reference plan run on a copy of its repository, kill -9 after ``events``; its ledger."""
    plan, template, _ = reference
    shutil.copytree(template, tmp_path / "repo", symlinks=True)
    ledger = tmp_path / "out" / "ledger.jsonl"
    run = start_run(tmp_path / "repo", tmp_path / "out", plan)
    wait_for(lambda: events_written(ledger) >= events)
    run.kill()
    run.wait()
    return ledger


class TestNamedKills:
    @pytest.mark.timeout(300)
    @pytest.mark.parametrize(
        ("subcommand", "match"),
        [("update-ref", "refs/heads/main"), ("am", "-k"), ("read-tree", "-m")],
    )
    def test_killed_inside_git(
        self,
        tmp_path: Path,
        reference: Reference,
        subcommand: str,
        match: str,
    ) -> None:
        """
        Killed while a git child works (for update-ref: holding the branch's lock).

        The child outlives mesh; the resume ends it, clears its stale lock, and delivers.
        """
        plan, template, expected = reference
        shutil.copytree(template, tmp_path / "repo", symlinks=True)
        environment = slow_git_environment(tmp_path, subcommand, match)
        run = subprocess.Popen(
            [sys.executable, "-m", "mesh", "run", str(plan), "--repo", str(tmp_path / "repo"),
             "--out", str(tmp_path / "out"), "--delivery", "commit_first",
             "--coder-command", CODER, "--max-threads", "3"],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        marker = tmp_path / "paused"
        wait_for(lambda: marker.exists() and marker.read_text().strip())
        child = int(marker.read_text())
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert alive(child), "the paused git outlived mesh, as a real one would"
        resumed = resume(tmp_path / "out")
        assert resumed.returncode == 0, resumed.stderr
        assert not alive(child)
        assert_like_the_reference(tmp_path, expected)

    @pytest.mark.timeout(300)
    def test_a_resume_killed_as_it_took_over(self, tmp_path: Path, reference: Reference) -> None:
        """
        Killed in update-ref; the resume killed the moment it owned the run; resumed again.

        The paused git of the first owner is the last one's charge too: ended, lock cleared.
        """
        plan, template, expected = reference
        shutil.copytree(template, tmp_path / "repo", symlinks=True)
        environment = slow_git_environment(tmp_path, "update-ref", "refs/heads/main")
        run = subprocess.Popen(
            [sys.executable, "-m", "mesh", "run", str(plan), "--repo", str(tmp_path / "repo"),
             "--out", str(tmp_path / "out"), "--delivery", "commit_first",
             "--coder-command", CODER, "--max-threads", "3"],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        marker = tmp_path / "paused"
        wait_for(lambda: marker.exists() and marker.read_text().strip())
        child = int(marker.read_text())
        run.kill()
        run.wait()
        owner = tmp_path / "out" / "run.owner"
        taking_over = subprocess.Popen(
            [sys.executable, "-m", "mesh", "resume", str(tmp_path / "out")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: f'"pid": {taking_over.pid},' in owner.read_text())
        taking_over.send_signal(signal.SIGSTOP)  # frozen where it stood, then killed
        taking_over.kill()
        taking_over.wait()
        resumed = resume(tmp_path / "out")
        assert resumed.returncode == 0, resumed.stderr
        assert not alive(child)
        assert_like_the_reference(tmp_path, expected)

    @pytest.mark.timeout(300)
    def test_killed_during_a_resume(self, tmp_path: Path, reference: Reference) -> None:
        """A run killed, its resume killed, resumed again: like one run."""
        expected = reference[2]
        ledger = killed_after(tmp_path, reference, 40)
        first = events_written(ledger)
        again = subprocess.Popen(
            [sys.executable, "-m", "mesh", "resume", str(tmp_path / "out")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: events_written(ledger) >= first + 15 or again.poll() is not None)
        again.kill()
        again.wait()
        resumed = resume(tmp_path / "out")
        assert resumed.returncode == 0, resumed.stderr
        assert_like_the_reference(tmp_path, expected)

    @pytest.mark.timeout(300)
    def test_two_resumes_racing(self, tmp_path: Path, reference: Reference) -> None:
        """Two `mesh resume` at once: one works, the other is refused at once, naming it."""
        expected = reference[2]
        killed_after(tmp_path, reference, 30)
        racing = [
            subprocess.Popen(
                [sys.executable, "-m", "mesh", "resume", str(tmp_path / "out")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outcomes = sorted(
            (process.wait(timeout=180), process.communicate()[1]) for process in racing
        )
        (won, _), (lost, refusal) = outcomes
        assert won == 0
        if lost != 0:  # else the second started after the first had finished: nothing to do
            assert "is owned by process" in refusal
            assert refusal.count("\n") == 1, refusal
        assert_like_the_reference(tmp_path, expected)
