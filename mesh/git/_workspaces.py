"""
Workspaces for candidates: folders of files that share nothing writable with the target repository.

A coder or a proof is an untrusted process: whatever git state it can reach,
it may rewrite (hooks, config, refs, index, a worktree's ``.git`` file). So a
workspace is not a linked worktree of the target (those share the target's
config, hooks and refs); it is a plain folder checked out by mesh, plus:

- mesh's **shadow repository** (one per manager, outside every workspace): a
  private git directory whose objects fall back on the target's (read-only,
  through git's alternates). mesh reads and writes a workspace only through
  it, each workspace with an index of its own, so nothing an agent does to a
  workspace's git state is ever used or executed by mesh;
- a small standalone repository in the workspace's own ``.git`` for the agent
  (``git status``, ``git diff`` work as usual), detached at the workspace's
  commit. The agent may change it at will: mesh never reads it, and throws it
  away when the workspace is reused.

A patch is judged by the shadow repository: applied to an index built from
its base commit, then read back as the paths and modes git changed (see
`mesh.gate_problems`). Every workspace lives in a folder owned by this
process; a later manager on the same repository removes the folders of
owners that died.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Final, Self, TypeAlias

import anyio
import attrs

from ..contracts._enums import FailureCode
from ..contracts._errors import InputError, MeshError
from ..contracts._files import force_remove, walk_tree
from ..contracts._gate import SYMLINK_MODE, PathChange, parse_raw_diff
from ..host._owner import pid_alive
from ._git import Git, GitError

__all__ = [
    "ChangeReading",
    "Workspace",
    "WorkspaceManager",
    "WorkspaceSource",
    "check_shadow",
    "checkout_at",
    "opened",
    "shadow_settings",
    "source_problems",
]

_OWNER_FILE: Final = "owner.pid"
_LOCK_FILE: Final = "mesh-worktrees.lock"
_LOCK_POLL: Final = 0.005
_FOLDER: Final = "mesh-worktrees"
# A manager's own folder: its process id and a random tag (see `WorkspaceManager`).
_OWNED_NAME: Final = re.compile(r"[0-9]+-[0-9a-f]{8}")
_SHADOW: Final = "shadow.git"
_INDEXES: Final = "indexes"


@attrs.frozen(kw_only=True)
class Workspace:
    """
    One workspace: a folder of files checked out at ``sha``.

    ``index`` and ``shadow`` are how mesh itself reads the folder (its own
    index, its private git directory); the folder's ``.git`` belongs to the
    agent and is never trusted.

    .. versionadded:: 0.1.0
    """

    path: Path
    sha: str
    index: Path | None = attrs.field(default=None, eq=False, repr=False)
    shadow: Path | None = attrs.field(default=None, eq=False, repr=False)
    shadow_settings: str = attrs.field(default="", eq=False, repr=False)
    """A digest of the shadow repository's settings as mesh wrote them."""

    def git(self) -> Git:
        """Git on this workspace's files through mesh's own index and git directory."""
        if self.index is None or self.shadow is None:
            raise InputError(f"{self.path} is not a workspace of an open WorkspaceManager")
        check_shadow(self.shadow, self.shadow_settings)
        return Git(cwd=self.path, git_dir=self.shadow, work_tree=self.path, index_file=self.index)


def shadow_settings(shadow: Path) -> str:
    """
    A digest of what in a git directory decides what git runs: config, info, hooks, alternates.

    mesh writes the shadow repository's settings once; a change means a
    process outside its workspace is writing mesh's files (see `check_shadow`).
    """
    digest = hashlib.sha256()
    for name in ("config", "objects/info/alternates", "commondir"):
        try:
            digest.update(name.encode() + b"\0" + (shadow / name).read_bytes() + b"\0")
        except FileNotFoundError:
            digest.update(name.encode() + b"\0-\0")
    for folder in ("info", "hooks"):
        digest.update(folder.encode() + (b"+" if (shadow / folder).exists() else b"-"))
    return digest.hexdigest()


def check_shadow(shadow: Path, expected: str) -> None:
    """
    Raise unless the shadow repository's settings are still the ones mesh wrote.

    Without a sandbox a coder or proof runs as you and could add, say, a
    filter driver to mesh's own shadow repository, which mesh's next git
    command would run. With a sandbox it cannot write there at all.
    """
    if expected and shadow_settings(shadow) != expected:
        raise MeshError(
            f"mesh's shadow repository {shadow} was changed by another process "
            "(a coder or proof writing outside its workspace?): run with a sandbox",
            code=FailureCode.TOOLING_UNAVAILABLE,
        )


@attrs.frozen(kw_only=True)
class ChangeReading:
    """
    What git says a change does: every path with its modes, and the symlinks of the result.

    ``applies`` is False (with git's own words in ``evidence``) when a patch
    does not apply to its base.
    """

    applies: bool
    evidence: str = ""
    changes: tuple[PathChange, ...] = ()
    links: dict[str, str] = attrs.field(factory=dict, hash=False)
    """Every symlink of the resulting tree (path → target), when the change touches one."""
    base_links: dict[str, str] = attrs.field(factory=dict, hash=False)
    """Every symlink of the tree the change starts from, when the change touches one."""
    tree: str = ""
    """The resulting tree's id."""


async def repository_top(repo: str | os.PathLike[str]) -> Path:
    """
    The top folder of the git repository at ``repo``.

    Raises:
        InputError: When ``repo`` is not a folder, or not in a git repository.
    """
    if not await anyio.Path(repo).is_dir():
        raise InputError(f"--repo {os.fspath(repo)}: not a folder")
    try:
        return Path(await Git(cwd=Path(repo))("rev-parse", "--show-toplevel"))
    except GitError as exc:
        raise InputError(f"{os.fspath(repo)} is not a git repository: {exc.message}") from exc


def _owner_record() -> str:
    return f"{os.getpid()} {socket.gethostname()}"


def _dead_owner_folders(base: Path) -> list[Path]:
    """The folders in ``base`` (made before this is called) whose owner process is gone."""
    dead = []
    host = socket.gethostname()
    for folder in sorted(base.iterdir()):
        # Only folders named as mesh names them: whatever else is there is not mesh's.
        if not _OWNED_NAME.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            pid_text, _, owner_host = (folder / _OWNER_FILE).read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, owner_host = 0, ""
        if owner_host and owner_host != host:
            continue  # a repository on a shared folder: another machine's process, alive or not
        if not (pid and pid_alive(pid)):
            dead.append(folder)
    return dead


def _remove_admin_entries(common: Path, dead: list[Path]) -> bool:
    """
    Remove git's records of linked worktrees in ``dead`` folders; True when there were some.

    Workspaces are no longer linked worktrees, but a folder left by an earlier
    mesh may still have them: a ``git worktree add`` killed half way leaves a
    record that is locked ("initializing") and can lack files that ``git
    worktree list`` needs, so ``git worktree prune`` keeps it and every later
    list fails. The owner is dead, so nothing is still writing it.
    """
    records = common / "worktrees"
    if not dead or not records.is_dir():
        return False
    removed = False
    for record in records.iterdir():
        try:
            checkout = Path((record / "gitdir").read_text().strip())
        except OSError:
            continue  # not written yet: nothing says whose it is
        if any(checkout.is_relative_to(folder) for folder in dead):
            shutil.rmtree(record, ignore_errors=True)
            removed = True
    return removed


def _scrub(root: Path) -> None:
    """
    Remove what git's own clean leaves: every ``.git`` below ``root``, and special files.

    git's walks skip ``.git`` entries and ignore FIFOs, sockets and devices, so
    ``git clean`` keeps them; a FIFO left where the next candidate's tests
    read would hang them.
    """
    # An unreadable folder raises: the workspace is then removed, not reused.
    for folder, names, files in walk_tree(root):
        for name in [*names, *files]:
            path = folder / name
            mode = path.lstat().st_mode
            special = not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))
            if name == ".git" or special:
                force_remove(path)
        names[:] = [name for name in names if name != ".git"]


async def _remove_tree(path: Path) -> None:
    """Remove a file or folder (see `force_remove`), off the event loop."""
    await anyio.to_thread.run_sync(functools.partial(force_remove, path))


class WorkspaceManager:
    """
    Workspaces of one repository for one run: ``async with WorkspaceManager(repo) as workspaces``.

    Args:
        repo: Any path inside the repository.
        pool_size: Workspaces kept for reuse instead of being removed.
        root: Where this manager's workspaces go (default: inside the
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
        """This manager's turn at its pool, and at the folder shared with other processes."""
        self._pool: list[Workspace] = []
        self._leased: dict[Path, Workspace] = {}
        self._names = itertools.count(1)
        self._tracked: tuple[str, ...] | None = None
        self._repo: Path | None = None
        self._common = Path()
        self._objects = Path()
        self._object_format = "sha1"
        self._owned: Path | None = None
        self._lock = Path()
        self._shadow_settings = ""
        self.created = 0
        """Workspaces made (a pool hit makes none)."""
        self.reused = 0
        """Acquisitions served from the pool."""

    def __reduce__(self) -> str | tuple[object, ...]:
        # A copy in another process would add workspaces to this process's folder
        # and pool behind its back; adapters that travel take the repository's path.
        raise TypeError(
            "a WorkspaceManager belongs to the process that opened it and cannot be "
            "pickled: give the adapter the repository's path instead"
        )

    @property
    def is_open(self) -> bool:
        """Whether the manager is open (inside its ``async with``)."""
        return self._owned is not None

    @property
    def repo(self) -> Path:
        """The repository's top folder."""
        if self._repo is None:
            raise InputError("the workspace manager is not open: use `async with`")
        return self._repo

    @property
    def folder(self) -> Path:
        """The folder holding this manager's workspaces."""
        if self._owned is None:
            raise InputError("the workspace manager is not open: use `async with`")
        return self._owned

    @property
    def common_dir(self) -> Path:
        """The repository's git directory (shared by all its worktrees)."""
        _ = self.repo
        return self._common

    def target(self) -> Git:
        """Git on the repository itself, as mesh runs it."""
        return Git(cwd=self.repo)

    def shadow(
        self,
        *,
        work_tree: Path | None = None,
        index_file: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> Git:
        """Git on this manager's private shadow repository, checked untouched (`check_shadow`)."""
        shadow = self.folder / _SHADOW
        check_shadow(shadow, self._shadow_settings)
        return Git(
            cwd=self.folder,
            git_dir=shadow,
            work_tree=work_tree,
            index_file=index_file,
            environment=environment or {},
        )

    async def __aenter__(self) -> Self:
        self._repo = await repository_top(self._repo_arg)
        probe = Git(cwd=self._repo_arg)
        common = await probe("rev-parse", "--git-common-dir")
        objects = await probe("rev-parse", "--git-path", "objects")
        self._object_format = await probe("rev-parse", "--show-object-format")
        self._common = (self._repo_arg / common).resolve()
        self._objects = (self._repo_arg / objects).resolve()
        base = self._root_arg or self._common / _FOLDER
        # Managers sharing a folder of workspaces share its lock, whatever their repository.
        self._lock = self._common / _LOCK_FILE if self._root_arg is None else base / _LOCK_FILE
        await anyio.Path(base).mkdir(parents=True, exist_ok=True)
        owned = base / f"{os.getpid()}-{secrets.token_hex(4)}"
        # One turn for both: another process's cleanup must not see this folder
        # before its owner file is written (it would take it for a dead one).
        async with self._admin_steps():
            await self._remove_dead_owners(base)
            await anyio.Path(owned).mkdir(parents=True)
            await anyio.Path(owned / _OWNER_FILE).write_text(_owner_record())
        self._owned = owned
        try:
            await self._make_shadow()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    async def _make_shadow(self) -> None:
        shadow = self.folder / _SHADOW
        await Git(cwd=self.folder)(
            "init",
            "--quiet",
            "--bare",
            "--template=",
            f"--object-format={self._object_format}",
            str(shadow),
        )
        alternates = anyio.Path(shadow / "objects" / "info")
        await alternates.mkdir(parents=True, exist_ok=True)
        await (alternates / "alternates").write_text(f"{self._objects}\n")
        await anyio.Path(self.folder / _INDEXES).mkdir()
        self._shadow_settings = await anyio.to_thread.run_sync(shadow_settings, shadow)

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    @contextlib.asynccontextmanager
    async def _admin_steps(self) -> AsyncIterator[None]:
        """
        Exclusive use of the folder of workspaces: within this process, then across processes.

        Two managers opening at once must not take each other's new folders
        for a dead owner's. The file lock is taken by polling, so waiting for
        it stays cancellable.
        """
        async with self._admin:
            descriptor = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
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
        """Crash recovery: folders whose owner process is gone are removed."""
        dead = await anyio.to_thread.run_sync(_dead_owner_folders, base)
        for folder in dead:
            await _remove_tree(folder)
        if await anyio.to_thread.run_sync(_remove_admin_entries, self._common, dead):
            await self.target()("worktree", "prune")

    async def close(self) -> None:
        """Remove every workspace of this manager (pooled and still leased) and its folder."""
        if self._owned is None or self._repo is None:
            return
        async with self._admin_steps():
            self._pool.clear()
            self._leased.clear()
            await _remove_tree(self._owned)
        self._owned = None

    async def resolve(self, revision: str) -> str:
        """The commit sha a revision names (``HEAD``, a branch, a sha)."""
        try:
            return await self.target()(
                "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"
            )
        except GitError as exc:
            raise InputError(f"{revision!r} is not a commit of {self.repo}") from exc

    async def worktrees(self) -> dict[Path, str | None]:
        """Every worktree of the repository and the branch checked out there (None: detached)."""
        listing = await self.target()("worktree", "list", "--porcelain", "-z")
        found: dict[Path, str | None] = {}
        path: Path | None = None
        for line in listing.split("\0"):
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
                found[path] = None
            elif line.startswith("branch refs/heads/") and path is not None:
                found[path] = line.removeprefix("branch refs/heads/")
        return found

    async def tracked_files(self) -> tuple[str, ...]:
        """The repository's tracked files (read once per manager)."""
        if self._tracked is None:
            listing = await self.target()("ls-files", "-z")
            self._tracked = tuple(name for name in listing.split("\0") if name)
        return self._tracked

    async def acquire(self, revision: str = "HEAD") -> Workspace:
        """A clean workspace at ``revision``: from the pool when one is free, else a new one."""
        sha = await self.resolve(revision)
        async with self._admin:
            pooled = self._pool.pop() if self._pool else None
            name = pooled.path.name if pooled is not None else f"wt-{next(self._names)}"
            workspace = Workspace(
                path=self.folder / name,
                sha=sha,
                index=self.folder / _INDEXES / name,
                shadow=self.folder / _SHADOW,
                shadow_settings=self._shadow_settings,
            )
            self._leased[workspace.path] = workspace
            if pooled is None:
                self.created += 1
            else:
                self.reused += 1
        try:
            await self._fill(workspace, reused=pooled is not None)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._discard(workspace)
            raise
        return workspace

    async def _fill(self, workspace: Workspace, *, reused: bool) -> None:
        """Check ``workspace.sha`` out into the folder, whatever a previous occupant left there."""
        path = anyio.Path(workspace.path)
        if reused:
            # The agent's git directory is untrusted: it is never read, only replaced.
            await anyio.to_thread.run_sync(force_remove, workspace.path / ".git")
        await path.mkdir(exist_ok=True)
        # On reuse, mesh's own index of the folder says what to rewrite: git
        # compares each file's size, times (the change time included, which no
        # one can set back) and inode, and rewrites every file that differs.
        git = workspace.git()
        await git("read-tree", "--reset", "-u", workspace.sha)
        if reused:
            await git("clean", "-ffdxq")
            await anyio.to_thread.run_sync(_scrub, workspace.path)
        await anyio.to_thread.run_sync(self._agent_repository, workspace)

    def _agent_repository(self, workspace: Workspace) -> None:
        """The standalone repository in the workspace's ``.git``, for the agent's own git use."""
        assert workspace.index is not None  # noqa: S101 - workspaces come from acquire
        dot_git = workspace.path / ".git"
        for folder in ("objects/info", "refs/heads", "refs/tags"):
            (dot_git / folder).mkdir(parents=True, exist_ok=True)
        (dot_git / "objects" / "info" / "alternates").write_text(f"{self._objects}\n")
        (dot_git / "HEAD").write_text(f"{workspace.sha}\n")
        sha256 = self._object_format != "sha1"
        (dot_git / "config").write_text(
            "[core]\n"
            f"\trepositoryformatversion = {1 if sha256 else 0}\n"
            "\tfilemode = true\n\tbare = false\n"
            + (f"[extensions]\n\tobjectformat = {self._object_format}\n" if sha256 else "")
        )
        # mesh's index describes exactly these files, so the agent starts clean.
        shutil.copyfile(workspace.index, dot_git / "index")

    async def release(self, workspace: Workspace | str | os.PathLike[str]) -> None:
        """Give a workspace back: kept for reuse, or removed when the pool is full."""
        path = workspace.path if isinstance(workspace, Workspace) else Path(workspace)
        async with self._admin:
            held = self._leased.pop(path, None)
            if held is None:
                return  # released already (a retry may release twice)
            if len(self._pool) < self.pool_size:
                self._pool.append(held)
                return
        await self._discard(held)

    async def _discard(self, workspace: Workspace) -> None:
        async with self._admin:
            self._leased.pop(workspace.path, None)
        await _remove_tree(workspace.path)
        await _remove_tree(self.folder / _INDEXES / workspace.path.name)

    @contextlib.asynccontextmanager
    async def checkout(self, revision: str = "HEAD") -> AsyncIterator[Workspace]:
        """A workspace for the length of a ``with`` block."""
        workspace = await self.acquire(revision)
        try:
            yield workspace
        finally:
            with anyio.CancelScope(shield=True):
                await self.release(workspace)

    @property
    def in_use(self) -> int:
        """Workspaces handed out and not yet released."""
        return len(self._leased)

    # -- reading changes as git does ---------------------------------------------

    @contextlib.asynccontextmanager
    async def scratch_index(self) -> AsyncIterator[Git]:
        """The shadow repository with an index file of its own, removed after the block."""
        index = self.folder / _INDEXES / f"scratch-{secrets.token_hex(6)}"
        try:
            yield self.shadow(index_file=index)
        finally:
            with anyio.CancelScope(shield=True):
                await _remove_tree(index)

    async def read_patch(self, base: str, patch: str) -> ChangeReading:
        """
        What ``patch`` does to ``base``, as git reads it: applied to an index, then compared.

        Nothing is written anywhere but this manager's shadow repository. A
        patch that does not apply (or is not a patch) reads as ``applies=False``.
        """
        sha = await self.resolve(base)
        async with self.scratch_index() as git:
            await git("read-tree", sha)
            result = await git.run(
                "apply", "--cached", "--whitespace=nowarn", "-", stdin=patch.encode()
            )
            if result.exit_code != 0:
                return ChangeReading(applies=False, evidence=result.errors.strip())
            tree = await git("write-tree")
        return await self.read_trees(f"{sha}^{{tree}}", tree, tree=tree)

    async def read_trees(
        self, old: str, new: str, *, tree: str | None = None, in_target: bool = False
    ) -> ChangeReading:
        """
        Every path that differs between two trees (or commits), with its modes.

        ``in_target`` reads them in the repository itself rather than in the
        shadow repository: only objects the target holds are then believed.
        """
        git = self.target() if in_target else self.shadow()
        raw = await git.raw("diff-tree", "-r", "-z", "--raw", "--no-renames", old, new)
        changes = parse_raw_diff(raw)
        tree = tree or await git("rev-parse", "--verify", f"{new}^{{tree}}")
        # A change to any symlink can change where the others lead: read them all, both sides.
        if any(SYMLINK_MODE in {c.old_mode, c.new_mode} for c in changes):
            links, base_links = await self._links(git, tree), await self._links(git, old)
        else:
            links, base_links = {}, {}
        return ChangeReading(
            applies=True, changes=changes, links=links, base_links=base_links, tree=tree
        )

    @staticmethod
    async def _links(git: Git, tree: str) -> dict[str, str]:
        """Every symlink in ``tree`` and where it points."""
        listing = await git.raw("ls-tree", "-r", "-z", "--full-tree", tree)
        entries: list[tuple[str, str]] = []
        for entry in listing.split(b"\0"):
            meta, _, raw_name = entry.partition(b"\t")
            fields = meta.split(b" ")
            if len(fields) == 3 and fields[0].decode() == SYMLINK_MODE:  # noqa: PLR2004 - mode type id
                entries.append((raw_name.decode("utf-8", "surrogateescape"), fields[2].decode()))
        batch = await git.raw(
            "cat-file", "--batch", stdin="".join(f"{obj}\n" for _, obj in entries).encode()
        )
        links: dict[str, str] = {}
        position = 0
        for name, _ in entries:
            header_end = batch.index(b"\n", position)
            size = int(batch[position:header_end].split(b" ")[2])
            body = batch[header_end + 1 : header_end + 1 + size]
            links[name] = body.decode("utf-8", "surrogateescape")
            position = header_end + 1 + size + 1
        return links


WorkspaceSource: TypeAlias = "WorkspaceManager | str | os.PathLike[str]"
"""An open `WorkspaceManager`, or the path of a repository to open one on for each call."""


def source_problems(source: WorkspaceSource) -> list[str]:
    """What keeps an adapter on ``source`` from working: a manager that is not open."""
    if isinstance(source, WorkspaceManager) and not source.is_open:
        return [
            (
                "its WorkspaceManager is not open: run inside `async with "
                "mesh.WorkspaceManager(repo) as workspaces:`, or give mesh.run the repository "
                "(repo=...) and let it open them"
            )
        ]
    return []


@contextlib.asynccontextmanager
async def opened(source: WorkspaceSource) -> AsyncIterator[WorkspaceManager]:
    """
    ``source`` itself when it is a manager; else a manager on that repository for the block.

    Adapters given a repository path instead of a manager can be pickled, and
    make their workspaces where they run: on a Ray worker, in that machine's clone.
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
    """A workspace at ``revision`` for the block, and the manager it came from."""
    async with opened(source) as manager, manager.checkout(revision) as workspace:
        yield manager, workspace
