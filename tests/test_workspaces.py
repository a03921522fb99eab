"""Git worktrees per candidate: concurrent, pooled, always cleaned up, recovered after a crash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import mesh
from mesh.host._owner import pid_alive, process_state

from repo_helpers import commit_files, git

pytestmark = pytest.mark.anyio


def worktrees(repo: Path) -> list[str]:
    return [
        line
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


class TestWorkspaceManager:
    async def test_concurrent_workspaces(self, repo: Path) -> None:
        """Eight workspaces made at once are distinct, at the right commit, and removed at close."""
        head = git(repo, "rev-parse", "HEAD")
        async with mesh.WorkspaceManager(repo, pool_size=2) as workspaces:
            got: list[mesh.Workspace] = []

            async def take() -> None:
                got.append(await workspaces.acquire())

            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(take)
            assert len({w.path for w in got}) == 8
            assert {git(w.path, "rev-parse", "HEAD") for w in got} == {head}
            assert {git(w.path, "status", "--porcelain") for w in got} == {""}
            assert all((w.path / "src" / "app.py").is_file() for w in got)
            assert (workspaces.created, workspaces.in_use) == (8, 8)
            for workspace in got:
                await workspaces.release(workspace)
            assert workspaces.in_use == 0
            kept = [w for w in got if w.path.exists()]
            assert len(kept) == 2  # the pool keeps two
            folder = workspaces.folder
        # Workspaces are never linked worktrees: the repository's records are untouched.
        assert worktrees(repo) == [f"worktree {repo}"]
        assert not folder.exists()

    async def test_pool_reuse_is_clean(self, repo: Path) -> None:
        """A pooled workspace comes back reset: no edits, no untracked or ignored files."""
        first_commit = git(repo, "rev-parse", "HEAD")
        second_commit = commit_files(repo, {"src/app.py": "changed\n"}, "second")
        async with mesh.WorkspaceManager(repo, pool_size=1) as workspaces:
            async with workspaces.checkout(first_commit) as workspace:
                (workspace.path / "src" / "app.py").write_text("dirty\n")
                (workspace.path / "junk.pyc").write_text("x")
                first_path = workspace.path
            async with workspaces.checkout("HEAD") as again:
                assert again.path == first_path
                assert again.sha == second_commit
                assert (again.path / "src" / "app.py").read_text() == "changed\n"
                assert not (again.path / "junk.pyc").exists()
                assert git(again.path, "rev-parse", "HEAD") == second_commit
            assert (workspaces.created, workspaces.reused) == (1, 1)

    async def test_release_twice_and_by_path(self, repo: Path) -> None:
        """Releasing is idempotent and accepts the workspace's path."""
        async with mesh.WorkspaceManager(repo, pool_size=0) as workspaces:
            workspace = await workspaces.acquire()
            await workspaces.release(str(workspace.path))
            await workspaces.release(workspace)
            assert not workspace.path.exists()

    async def test_crash_leftovers_are_removed(self, repo: Path, tmp_path: Path) -> None:
        """Workspaces of a process that died are removed by the next manager."""
        script = (
            "import anyio, os, sys, mesh\n"
            "async def main():\n"
            "    manager = mesh.WorkspaceManager(sys.argv[1])\n"
            "    await manager.__aenter__()\n"
            "    workspace = await manager.acquire()\n"
            "    print(workspace.path, flush=True)\n"
            "    os._exit(9)\n"
            "anyio.run(main)\n"
        )
        crashed = subprocess.run(
            [sys.executable, "-c", script, str(repo)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert crashed.returncode == 9
        leftover = Path(crashed.stdout.strip())
        assert leftover.is_dir()
        async with mesh.WorkspaceManager(repo) as workspaces:
            assert not leftover.exists()
            assert not leftover.parent.exists()
            assert workspaces.in_use == 0

    async def test_live_owners_are_left_alone(self, repo: Path) -> None:
        """Two managers on one repository do not remove each other's workspaces."""
        async with mesh.WorkspaceManager(repo) as first, mesh.WorkspaceManager(repo) as second:
            mine = await first.acquire()
            async with second.checkout():
                assert mine.path.is_dir()
            assert first.folder != second.folder

    async def test_tracked_files_and_resolve(self, repo: Path) -> None:
        """The tracked files are listed once; revisions resolve to commits."""
        async with mesh.WorkspaceManager(repo) as workspaces:
            assert await workspaces.tracked_files() == (
                "README.md",
                "docs/guide.md",
                "src/app.py",
                "src/util.py",
            )
            assert await workspaces.tracked_files() is await workspaces.tracked_files()
            assert await workspaces.resolve("main") == git(repo, "rev-parse", "HEAD")
            with pytest.raises(mesh.InputError, match="'nope' is not a commit"):
                await workspaces.resolve("nope")
            with pytest.raises(mesh.InputError, match="is not a commit"):
                await workspaces.resolve("--output=/tmp/x")  # never read as an option

    async def test_bad_repositories(self, tmp_path: Path) -> None:
        """A missing folder, a folder outside git, and a manager not yet open are clear errors."""
        with pytest.raises(mesh.InputError, match="not a folder"):
            async with mesh.WorkspaceManager(tmp_path / "missing"):
                pass
        (tmp_path / "plain").mkdir()
        with pytest.raises(mesh.InputError, match="is not a git repository"):
            async with mesh.WorkspaceManager(tmp_path / "plain"):
                pass
        manager = mesh.WorkspaceManager(tmp_path)
        with pytest.raises(mesh.InputError, match="not open"):
            _ = manager.repo
        with pytest.raises(mesh.InputError, match="not open"):
            _ = manager.folder
        with pytest.raises(mesh.InputError, match="not a workspace of an open"):
            mesh.Workspace(path=tmp_path, sha="0" * 40).git()
        await manager.close()  # closing a manager that never opened does nothing

    async def test_failed_checkout_is_discarded(self, repo: Path) -> None:
        """When filling a workspace fails, it is removed, not leaked."""
        async with mesh.WorkspaceManager(repo, pool_size=1) as workspaces:
            alternates = workspaces.folder / "shadow.git" / "objects" / "info" / "alternates"
            alternates.write_text("/nowhere\n")  # the shadow cannot read the commit any more
            with pytest.raises(mesh.MeshError, match=r"shadow repository .* was changed"):
                await workspaces.acquire()
            assert workspaces.in_use == 0
            assert not (workspaces.folder / "wt-1").exists()

    async def test_a_shadow_that_cannot_be_made_closes_the_manager(
        self, repo: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failure while opening removes the manager's folder instead of leaking it."""
        from mesh.git import _workspaces  # noqa: PLC0415 - the private step under test

        async def broken(self: mesh.WorkspaceManager) -> None:
            raise mesh.GitError("git init", "fatal: no room", 1)

        monkeypatch.setattr(_workspaces.WorkspaceManager, "_make_shadow", broken)
        with pytest.raises(mesh.GitError, match="no room"):
            async with mesh.WorkspaceManager(repo):
                pass
        assert list((repo / ".git" / "mesh-worktrees").iterdir()) == []


class TestWhatAnAgentLeaves:
    async def test_an_edit_that_keeps_size_and_time_is_undone(self, repo: Path) -> None:
        """A file edited to the same size with its old time back is rewritten on reuse."""
        async with mesh.WorkspaceManager(repo, pool_size=1) as workspaces:
            async with workspaces.checkout() as workspace:
                target = workspace.path / "src" / "util.py"
                before = target.stat()
                target.write_text("VALUE = 9\n")
                os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
            async with workspaces.checkout() as again:
                assert (again.path / "src" / "util.py").read_text() == "VALUE = 1\n"

    async def test_links_folders_and_locks_left_behind(self, repo: Path, tmp_path: Path) -> None:
        """Symlinks out, nested repositories, stray .git entries and locked folders are cleared."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep.txt").write_text("mine\n")
        async with mesh.WorkspaceManager(repo, pool_size=1) as workspaces:
            async with workspaces.checkout() as workspace:
                root = workspace.path
                shutil.rmtree(root / "src")
                (root / "src").symlink_to(outside)  # a tracked folder replaced by a link out
                (root / "docs" / ".git").write_text("gitdir: /nowhere\n")
                git(root, "init", "--quiet", "nested")
                os.mkfifo(root / "docs" / "waiting")  # would hang whoever reads it next
                (root / "locked").mkdir()
                (root / "locked" / "f").write_text("x")
                (root / "locked").chmod(0)
                shutil.rmtree(root / ".git")
                (root / ".git").write_text(f"gitdir: {repo / '.git'}\n")
            async with workspaces.checkout() as again:
                assert again.path == root
                assert (root / "src").is_dir()
                assert not (root / "src").is_symlink()
                assert (root / "src" / "util.py").read_text() == "VALUE = 1\n"
                assert not (root / "docs" / ".git").exists()
                assert not (root / "nested").exists()
                assert not (root / "docs" / "waiting").exists()
                assert not (root / "locked").exists()
                assert (root / ".git").is_dir()
                assert git(root, "status", "--porcelain") == ""
        assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
        assert (outside / "keep.txt").read_text() == "mine\n"

    async def test_removing_a_workspace_never_follows_links(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """A removed workspace's links to folders outside are removed, not what they point to."""
        outside = tmp_path / "outside"
        (outside / "deep").mkdir(parents=True)
        (outside / "deep" / "keep.txt").write_text("mine\n")
        async with mesh.WorkspaceManager(repo, pool_size=0) as workspaces:
            workspace = await workspaces.acquire()
            (workspace.path / "src" / "out").symlink_to(outside)
            (workspace.path / "sealed").mkdir()
            (workspace.path / "sealed" / "inner").mkdir()
            (workspace.path / "sealed").chmod(0)
            await workspaces.release(workspace)
            assert not workspace.path.exists()
        assert (outside / "deep" / "keep.txt").read_text() == "mine\n"

    async def test_the_agents_git_is_its_own(self, repo: Path) -> None:
        """What an agent does with git in its workspace stays in the workspace's repository."""
        before = {
            "config": (repo / ".git" / "config").read_text(),
            "refs": git(repo, "for-each-ref"),
            "index": (repo / ".git" / "index").read_bytes(),
        }
        async with mesh.WorkspaceManager(repo) as workspaces, workspaces.checkout() as workspace:
            root = workspace.path
            git(root, "config", "core.hooksPath", str(root))
            git(root, "config", "user.name", "agent")
            git(root, "config", "user.email", "agent@example.invalid")
            (root / "src" / "new.py").write_text("x = 1\n")
            git(root, "add", "--all")
            git(root, "commit", "--quiet", "-m", "agent commit")
            git(root, "update-ref", "refs/heads/main", "HEAD")
            git(root, "branch", "agent-branch")
        assert before == {
            "config": (repo / ".git" / "config").read_text(),
            "refs": git(repo, "for-each-ref"),
            "index": (repo / ".git" / "index").read_bytes(),
        }


class TestOwnership:
    def test_pid_alive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Live, reaped, zombie and other users' processes are told apart."""
        assert pid_alive(os.getpid())
        child = subprocess.Popen(["true"])
        deadline = time.monotonic() + 5
        while process_state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(child.pid)  # a zombie: exited, not yet collected
        child.wait()
        assert not pid_alive(child.pid)
        assert process_state(child.pid) == ""

        def denied(pid: int, signal: int) -> None:
            raise PermissionError

        monkeypatch.setattr(os, "kill", denied)
        assert pid_alive(1)

    async def test_unreadable_owner_files_count_as_dead(self, repo: Path) -> None:
        """A folder of mesh's whose owner file is missing or garbage is a leftover; others stay."""
        base = repo / ".git" / "mesh-worktrees"
        (base / "123-0badf00d").mkdir(parents=True)
        (base / "123-0badf00d" / "owner.pid").write_text("not a pid")
        (base / "456-deadbeef").mkdir()
        (base / "notes").mkdir()  # not a name mesh gives: not mesh's to remove
        (base / "789-cafebabe").write_text("a file, not a folder of mesh's")
        async with mesh.WorkspaceManager(repo) as workspaces:
            assert sorted(p.name for p in base.iterdir()) == sorted(
                ["789-cafebabe", "notes", workspaces.folder.name]
            )

    async def test_another_process_holding_the_records_is_waited_for(self, repo: Path) -> None:
        """Worktree admin steps of two processes on one repository never overlap."""
        lock = repo / ".git" / "mesh-worktrees.lock"
        done = repo.parent / "holder-done"
        holding = (
            "import fcntl, pathlib, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(0.5); "
            "pathlib.Path(sys.argv[2]).write_text('done')"
        )
        with subprocess.Popen(
            [sys.executable, "-c", holding, str(lock), str(done)],
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            async with mesh.WorkspaceManager(repo) as workspaces:
                # The holder writes its marker before letting go: opening (a prune) waited.
                assert done.exists()
                workspace = await workspaces.acquire()
                await workspaces.release(workspace)
        assert holder.returncode == 0

    async def test_half_made_records_of_dead_owners_are_removed(self, repo: Path) -> None:
        """A ``git worktree add`` killed half way leaves a locked record; it does not break runs."""
        dead = repo / ".git" / "mesh-worktrees" / "12-0badf00d"
        dead.mkdir(parents=True)
        (dead / "owner.pid").write_text("0")
        records = repo / ".git" / "worktrees"
        foreign = repo.parent / "elsewhere" / ".git"
        for name, gitdir in [
            ("wt-1", dead / "wt-1" / ".git"),
            ("unknown", None),
            ("foreign", foreign),
        ]:
            (records / name).mkdir(parents=True)
            (records / name / "locked").write_text("initializing")
            if gitdir is not None:
                (records / name / "gitdir").write_text(f"{gitdir}\n")
            if name == "wt-1":
                (records / name / "commondir").write_text("")  # killed while writing it
        with pytest.raises(subprocess.CalledProcessError, match="list"):
            git(repo, "worktree", "list")  # git itself cannot list past the half-made record
        async with mesh.WorkspaceManager(repo) as workspaces:
            # Another owner's record (a prunable one) is listed, not removed.
            assert await workspaces.worktrees() == {repo: "main", foreign.parent: None}
        # Records that are not a dead owner's, or do not say whose they are, stay.
        assert sorted(p.name for p in records.iterdir()) == ["foreign", "unknown"]
