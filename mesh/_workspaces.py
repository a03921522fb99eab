"""
Isolated git worktrees for candidates: created safely under concurrency, pooled, always removed.

``git worktree add`` updates shared administrative files (``.git/worktrees``,
the config lock), so parallel adds in one repository race. Only those admin
steps run under a lock; filling a worktree (``git reset --hard``) writes to its
own index and files and runs in parallel. Every worktree lives in a folder
owned by this process; a later manager on the same repository removes the
folders of owners that died (a crash), then prunes git's records.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final, Self, TypeAlias

import anyio
import attrs

from ._errors import InputError
from ._git import GitError, git, git_result

__all__ = ["Workspace", "WorkspaceManager", "WorkspaceSource", "checkout_at", "opened"]

_OWNER_FILE: Final = "owner.pid"
_LOCK_FILE: Final = "mesh-worktrees.lock"
_LOCK_POLL: Final = 0.005
_FOLDER: Final = "mesh-worktrees"


@attrs.frozen(kw_only=True)
class Workspace:
    """
    One detached worktree, checked out at ``sha``.

    .. versionadded:: 0.1.0
    """

    path: Path
    sha: str


def _process_state(pid: int) -> str:
    """The process's state letter (``Z`` for a zombie), or "" where /proc cannot tell."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    # A zombie has exited; only its parent has not collected it yet.
    return _process_state(pid) != "Z"


def _owner_record() -> str:
    return f"{os.getpid()} {socket.gethostname()}"


def _dead_owner_folders(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    dead = []
    host = socket.gethostname()
    for folder in sorted(base.iterdir()):
        try:
            pid_text, _, owner_host = (folder / _OWNER_FILE).read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, owner_host = 0, ""
        if owner_host and owner_host != host:
            continue  # a repository on a shared folder: another machine's process, alive or not
        if not (pid and _pid_alive(pid)):
            dead.append(folder)
    return dead


def _remove_admin_entries(common: Path, dead: list[Path]) -> None:
    """
    Remove git's records of the worktrees in ``dead`` folders, locked ones too.

    A ``git worktree add`` killed half way leaves a record that is locked
    ("initializing") and can lack files that ``git worktree list`` needs, so
    ``git worktree prune`` keeps it and every later list fails. The owner is
    dead, so nothing is still writing it.
    """
    records = common / "worktrees"
    if not dead or not records.is_dir():
        return
    for record in records.iterdir():
        try:
            checkout = Path((record / "gitdir").read_text().strip())
        except OSError:
            continue  # not written yet: nothing says whose it is
        if any(checkout.is_relative_to(folder) for folder in dead):
            shutil.rmtree(record, ignore_errors=True)


async def _remove_tree(folder: Path) -> None:
    await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, folder, ignore_errors=True))


class WorkspaceManager:
    """
    Worktrees of one repository for one run: ``async with WorkspaceManager(repo) as workspaces``.

    Args:
        repo: Any path inside the repository.
        pool_size: Clean worktrees kept for reuse instead of being removed.
        root: Where this manager's worktrees go (default: inside the
            repository's git directory, out of the way of its files).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, repo: str | os.PathLike[str], *, pool_size: int = 4, root: Path | None = None
    ) -> None:
        self._repo_arg = Path(repo)
        self.pool_size = pool_size
        self._root_arg = root
        self._admin = anyio.Lock()
        """This manager's turn at git's worktree records (see `_admin_steps`)."""
        self._pool: list[Workspace] = []
        self._leased: dict[Path, Workspace] = {}
        self._names = itertools.count(1)
        self._tracked: tuple[str, ...] | None = None
        self._repo: Path | None = None
        self._common = Path()
        self._owned: Path | None = None
        self.created = 0
        """Worktrees added (a pool hit adds none)."""
        self.reused = 0
        """Acquisitions served from the pool."""

    def __reduce__(self) -> str | tuple[object, ...]:
        # A copy in another process would add worktrees to this process's folder
        # and pool behind its back; adapters that travel take the repository's path.
        raise TypeError(
            "a WorkspaceManager belongs to the process that opened it and cannot be "
            "pickled: give the adapter the repository's path instead"
        )

    @property
    def repo(self) -> Path:
        """The repository's top folder."""
        if self._repo is None:
            raise InputError("the workspace manager is not open: use `async with`")
        return self._repo

    @property
    def folder(self) -> Path:
        """The folder holding this manager's worktrees."""
        if self._owned is None:
            raise InputError("the workspace manager is not open: use `async with`")
        return self._owned

    async def __aenter__(self) -> Self:
        if not await anyio.Path(self._repo_arg).is_dir():
            raise InputError(f"--repo {self._repo_arg}: not a folder")
        try:
            top = await git("rev-parse", "--show-toplevel", cwd=self._repo_arg)
            common = await git("rev-parse", "--git-common-dir", cwd=self._repo_arg)
        except GitError as exc:
            raise InputError(f"{self._repo_arg} is not a git repository: {exc.message}") from exc
        self._repo = Path(top)
        self._common = (self._repo / common).resolve()
        base = self._root_arg or self._common / _FOLDER
        owned = base / f"{os.getpid()}-{secrets.token_hex(4)}"
        # One turn for both: another process's cleanup must not see this folder
        # before its owner file is written (it would take it for a dead one).
        async with self._admin_steps():
            await self._remove_dead_owners(base)
            await anyio.Path(owned).mkdir(parents=True)
            await anyio.Path(owned / _OWNER_FILE).write_text(_owner_record())
        self._owned = owned
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    @contextlib.asynccontextmanager
    async def _admin_steps(self) -> AsyncIterator[None]:
        """
        Exclusive use of git's worktree records: within this process, then across processes.

        git fails when one process lists, adds, removes or prunes worktrees while
        another writes the records (several Ray workers proving on one machine do).
        The file lock is taken by polling, so waiting for it stays cancellable.
        """
        async with self._admin:
            descriptor = os.open(self._common / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await anyio.sleep(_LOCK_POLL)
                yield
            finally:
                os.close(descriptor)  # and with it the lock

    async def _remove_dead_owners(self, base: Path) -> None:
        """Crash recovery: folders whose owner process is gone are removed, then git prunes."""
        dead = await anyio.to_thread.run_sync(_dead_owner_folders, base)
        for folder in dead:
            await _remove_tree(folder)
        await anyio.to_thread.run_sync(_remove_admin_entries, self._common, dead)
        await git("worktree", "prune", cwd=self.repo)

    async def close(self) -> None:
        """Remove every worktree of this manager (pooled and still leased) and its folder."""
        if self._owned is None or self._repo is None:
            return
        async with self._admin_steps():
            for workspace in [*self._pool, *self._leased.values()]:
                await git_result(
                    "worktree", "remove", "--force", str(workspace.path), cwd=self._repo
                )
            self._pool.clear()
            self._leased.clear()
            await _remove_tree(self._owned)
            await git("worktree", "prune", cwd=self._repo)
        self._owned = None

    async def resolve(self, revision: str) -> str:
        """The commit sha a revision names (``HEAD``, a branch, a sha)."""
        try:
            return await git(
                "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", cwd=self.repo
            )
        except GitError as exc:
            raise InputError(f"{revision!r} is not a commit of {self.repo}") from exc

    async def worktrees(self) -> dict[Path, str | None]:
        """
        Every worktree of the repository and the branch checked out there (None: detached).

        Listed under the same lock as this manager's adds and removes: a list
        read while ``git worktree add`` writes its records fails.
        """
        async with self._admin_steps():
            listing = await git("worktree", "list", "--porcelain", cwd=self.repo)
        found: dict[Path, str | None] = {}
        path: Path | None = None
        for line in listing.splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
                found[path] = None
            elif line.startswith("branch refs/heads/") and path is not None:
                found[path] = line.removeprefix("branch refs/heads/")
        return found

    async def tracked_files(self) -> tuple[str, ...]:
        """The repository's tracked files (read once per manager)."""
        if self._tracked is None:
            listing = await git("ls-files", "-z", cwd=self.repo)
            self._tracked = tuple(name for name in listing.split("\0") if name)
        return self._tracked

    async def acquire(self, revision: str = "HEAD") -> Workspace:
        """A clean worktree at ``revision``: from the pool when one is free, else a new one."""
        sha = await self.resolve(revision)
        async with self._admin_steps():
            pooled = self._pool.pop() if self._pool else None
            if pooled is None:
                path = self.folder / f"wt-{next(self._names)}"
                await git(
                    "worktree", "add", "--detach", "--no-checkout", str(path), sha, cwd=self.repo
                )
                self.created += 1
            else:
                path = pooled.path
                self.reused += 1
            workspace = Workspace(path=path, sha=sha)
            self._leased[path] = workspace
        try:
            await git("reset", "--hard", "--quiet", sha, cwd=path)
            if pooled is not None:
                await git("clean", "-ffdxq", cwd=path)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._discard(workspace)
            raise
        return workspace

    async def release(self, workspace: Workspace | str | os.PathLike[str]) -> None:
        """Give a worktree back: cleaned into the pool, or removed when the pool is full."""
        path = workspace.path if isinstance(workspace, Workspace) else Path(workspace)
        held = self._leased.get(path)
        if held is None:
            return  # released already (a retry may release twice)
        if len(self._pool) < self.pool_size:
            exit_code, _ = await git_result("clean", "-ffdxq", cwd=path)
            async with self._admin_steps():
                self._leased.pop(path, None)
                if exit_code == 0:
                    self._pool.append(held)
                    return
        await self._discard(held)

    async def _discard(self, workspace: Workspace) -> None:
        async with self._admin_steps():
            self._leased.pop(workspace.path, None)
            await git_result("worktree", "remove", "--force", str(workspace.path), cwd=self.repo)

    @contextlib.asynccontextmanager
    async def checkout(self, revision: str = "HEAD") -> AsyncIterator[Workspace]:
        """A worktree for the length of a ``with`` block."""
        workspace = await self.acquire(revision)
        try:
            yield workspace
        finally:
            with anyio.CancelScope(shield=True):
                await self.release(workspace)

    @property
    def in_use(self) -> int:
        """Worktrees handed out and not yet released."""
        return len(self._leased)


WorkspaceSource: TypeAlias = "WorkspaceManager | str | os.PathLike[str]"
"""An open `WorkspaceManager`, or the path of a repository to open one on for each call."""


@contextlib.asynccontextmanager
async def opened(source: WorkspaceSource) -> AsyncIterator[WorkspaceManager]:
    """
    ``source`` itself when it is a manager; else a manager on that repository for the block.

    Adapters given a repository path instead of a manager can be pickled, and
    make their worktrees where they run: on a Ray worker, in that machine's clone.
    """
    if isinstance(source, WorkspaceManager):
        yield source
        return
    async with WorkspaceManager(source, pool_size=0) as manager:
        yield manager


@contextlib.asynccontextmanager
async def checkout_at(
    source: WorkspaceSource, revision: str
) -> AsyncIterator[tuple[WorkspaceManager, Workspace]]:
    """A worktree at ``revision`` for the block, and the manager it came from."""
    async with opened(source) as manager, manager.checkout(revision) as workspace:
        yield manager, workspace
