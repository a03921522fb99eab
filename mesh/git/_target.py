"""
The delivery target's state: what the integrator checks before every delivery.

A snapshot is taken when a run starts (and kept in its run store, so that a
resumed run checks against the same one); before each delivery the target is
compared with it. What counts:

- **settings**: everything in the git directories that changes what git
  runs or reads: config files, hooks (and ``core.hooksPath``'s folder),
  attributes, excludes, grafts, shallow, alternates, replace refs, each
  worktree's ``.git`` link and records, and the same files of every
  submodule's git directory (``.git/modules``);
- **the branch**: where its tip is;
- **each checkout of the branch**: clean as git says it (``git status``),
  and beyond what ``git status`` shows: no entry newly marked
  assume-unchanged or skip-worktree, no new untracked file (nor any new
  untracked ignore file, which could hide one), and no tracked file whose
  change time moved and whose content is not what the index says (an edit
  hidden by rewriting the index's stat data). Submodules count by the commit
  they are at, never by what their own work trees hold: mesh runs nothing in
  them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
import attrs

from ..contracts._enums import FailureCode
from ..contracts._errors import MeshError
from ..contracts._gate import describe_path
from ..contracts._text import one_line
from ._git import Git, GitError

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

__all__ = ["CheckoutState", "Target", "TargetState", "open_target"]

_OPERATIONS: Final = (
    "index.lock",
    "rebase-apply",
    "rebase-merge",
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "BISECT_LOG",
)
# Folders of hooks nest this deep at most before the rest counts as one change.
_DEPTH_LIMIT: Final = 16
# Submodules inside submodules, this deep.
_NESTING_LIMIT: Final = 8
_SETTING_FILES: Final = (
    "config",
    "config.worktree",
    "info/attributes",
    "info/exclude",
    "info/grafts",
    "shallow",
    "objects/info/alternates",
    "commondir",
)
# What a submodule's own git directory holds that runs or changes what git reads.
_MODULE_FILES: Final = (
    "config",
    "config.worktree",
    "hooks",
    "info",
    "objects/info/alternates",
    "commondir",
    "gitdir",
)
_GITLINK: Final = "160000"


@attrs.frozen(kw_only=True)
class CheckoutState:
    """What a clean-looking checkout may still hide, beyond what ``git status`` shows."""

    hidden: frozenset[str]
    """Index entries marked assume-unchanged or skip-worktree (``git ls-files -v`` lines)."""
    untracked: frozenset[str]
    """Untracked files that are not ignored, and every untracked ignore file."""
    times: Mapping[str, int] = attrs.field(factory=dict, eq=False, hash=False)
    """Each tracked file's change time (ns): no one can set it back after an edit."""

    def to_document(self) -> dict[str, object]:
        """For the run store (the change times stay with the process that took them)."""
        return {"hidden": sorted(self.hidden), "untracked": sorted(self.untracked)}


@attrs.frozen(kw_only=True)
class TargetState:
    """The target as a run took it: its branch, the tip, its settings, its checkouts."""

    branch: str
    tip: str | None
    settings: Mapping[str, str]
    checkouts: Mapping[str, CheckoutState]

    def to_document(self) -> dict[str, object]:
        """The state as JSON values, to keep in the run store."""
        return {
            "branch": self.branch,
            "tip": self.tip,
            "settings": dict(self.settings),
            "checkouts": {path: state.to_document() for path, state in self.checkouts.items()},
        }

    @classmethod
    def from_document(cls, document: object) -> TargetState:
        """A state a run store kept (a damaged one is a `MeshError`)."""
        try:
            if not isinstance(document, dict):
                raise TypeError(type(document).__name__)  # noqa: TRY301 - reported below
            checkouts = {
                str(path): CheckoutState(
                    hidden=frozenset(map(str, state["hidden"])),
                    untracked=frozenset(map(str, state["untracked"])),
                )
                for path, state in document["checkouts"].items()
            }
            tip = document["tip"]
            return cls(
                branch=str(document["branch"]),
                tip=None if tip is None else str(tip),
                settings={str(k): str(v) for k, v in document["settings"].items()},
                checkouts=checkouts,
            )
        except (AttributeError, KeyError, TypeError) as exc:
            raise MeshError(
                f"the run store's record of the target is damaged ({type(exc).__name__})",
                code=FailureCode.TOOLING_UNAVAILABLE,
            ) from None


def _digest(path: Path) -> str:
    """
    A file's content digest ("" when absent); a folder's whole tree.

    Every entry, however deep, counts by name, type, size and content; a link by
    where it points and, when that is a file, its content (git runs a linked hook).
    """
    if path.is_file():
        return _content(hashlib.sha256(), path).hexdigest()
    if not path.is_dir():
        return ""
    return _fold(hashlib.sha256(), path, depth=0).hexdigest()


def _content(digest: Hash, path: Path) -> Hash:
    with path.open("rb") as file:
        while chunk := file.read(1 << 16):
            digest.update(chunk)
    return digest


def _fold(digest: Hash, folder: Path, *, depth: int) -> Hash:
    if depth > _DEPTH_LIMIT:
        digest.update(b"too deep\0")
        return digest
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        info = entry.lstat()
        digest.update(os.fsencode(entry.name) + f"\0{info.st_mode:o} {info.st_size}\0".encode())
        if stat.S_ISLNK(info.st_mode):
            digest.update(os.fsencode(entry.readlink()) + b"\0")
            if entry.is_file():
                _content(digest, entry)
        elif stat.S_ISREG(info.st_mode):
            _content(digest, entry)
        elif stat.S_ISDIR(info.st_mode):
            _fold(digest, entry, depth=depth + 1)
        digest.update(b"\0")
    return digest


def _digests(paths: Mapping[str, Path]) -> dict[str, str]:
    """Each path's `_digest`, by name (one trip to a worker thread for them all)."""
    found = {}
    for name, path in paths.items():
        try:
            found[name] = _digest(path)
        except OSError as exc:  # unreadable: that it is, and why, is its state
            found[name] = f"unreadable: {exc.strerror}"
    return found


def _git_dir_of(checkout: Path) -> Path | None:
    """Where a submodule checkout's ``.git`` (a folder, or a ``gitdir:`` file) leads."""
    dot_git = checkout / ".git"
    if dot_git.is_symlink():
        return None
    if dot_git.is_dir():
        return dot_git
    try:
        text = dot_git.read_text(errors="surrogateescape")
    except OSError:
        return None
    if not text.startswith("gitdir: "):
        return None
    found = checkout / text.removeprefix("gitdir: ").strip()
    return found if found.is_dir() else None


def _module_dirs(modules: Path) -> list[Path]:
    """Every submodule's git directory under ``modules``, nested ones included."""
    found: list[Path] = []
    if not modules.is_dir() or modules.is_symlink():
        return found
    for entry in sorted(modules.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        if (entry / "HEAD").is_file():
            found.append(entry)
            found.extend(_module_dirs(entry / "modules"))
        else:  # a module named with a slash: its git directory is further down
            found.extend(_module_dirs(entry))
    return found


def _change_times(checkout: Path, names: Iterable[str]) -> dict[str, int]:
    times: dict[str, int] = {}
    for name in names:
        try:
            times[name] = (checkout / name).lstat().st_ctime_ns
        except OSError:
            times[name] = -1
    return times


async def open_target(repo: Path, *, own_outputs: Sequence[Path] = ()) -> Target:
    """The target at ``repo`` (any folder in it), as a `Target`."""
    git = Git(cwd=repo)
    top = Path(await git("rev-parse", "--show-toplevel"))
    common = (repo / await git("rev-parse", "--git-common-dir")).resolve()
    return Target(top, common, own_outputs=own_outputs)


class Target:
    """
    The repository mesh delivers to, as git sees it (run as mesh runs it).

    Args:
        repo: The repository's top folder.
        common: Its git directory (shared by all its worktrees).
        own_outputs: Folders where mesh itself writes (the run's output): files
            appearing there are not a checkout's new files.
    """

    def __init__(self, repo: Path, common: Path, *, own_outputs: Sequence[Path] = ()) -> None:
        self.repo = repo
        self.common = common
        self.own_outputs = tuple(path.absolute() for path in own_outputs)

    def git(self) -> Git:
        """Git on the repository."""
        return Git(cwd=self.repo)

    async def branch(self, named: str | None) -> str:
        """The branch to deliver to; "" when none is named and HEAD is detached."""
        if named is None:
            current = await self.git().run("symbolic-ref", "--short", "-q", "HEAD")
            return current.text.strip() if current.exit_code == 0 else ""
        if (await self.git().run("check-ref-format", "--branch", named)).exit_code != 0:
            raise MeshError(
                f"{one_line(named)!r} is not a branch name", code=FailureCode.DELIVERY_BLOCKED
            )
        return named

    async def tip(self, branch: str) -> str | None:
        """The commit ``branch`` points at (None: there is no such branch)."""
        if not branch:
            return None
        result = await self.git().run(
            "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"
        )
        return result.text.strip() if result.exit_code == 0 else None

    async def worktrees(self) -> dict[Path, str | None]:
        """Every worktree of the repository and the branch checked out there (None: detached)."""
        listing = await self.git()("worktree", "list", "--porcelain", "-z")
        found: dict[Path, str | None] = {}
        path: Path | None = None
        # A repository made with --separate-git-dir lists its git directory as its main
        # worktree (git 2.39): it is this one, when this is the main worktree.
        main = self.repo if await self.admin_dir(self.repo) == self.common else None
        for line in listing.split("\0"):
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
                if main is not None and path == self.common:
                    path = main
                found[path] = None
            elif line.startswith("branch refs/heads/") and path is not None:
                found[path] = line.removeprefix("branch refs/heads/")
        return found

    async def checkouts(self, branch: str) -> list[Path]:
        """The worktrees where ``branch`` is checked out."""
        return [path for path, name in (await self.worktrees()).items() if name == branch]

    @staticmethod
    async def admin_dir(worktree: Path) -> Path | None:
        """A worktree's own git directory (None: its link is broken)."""
        result = await Git(cwd=worktree).run("rev-parse", "--path-format=absolute", "--git-dir")
        return Path(result.text.strip()) if result.exit_code == 0 else None

    async def settings(self) -> dict[str, str]:
        """A digest of everything in the git directories that changes what git runs or reads."""
        git = self.git()
        state = {
            "replace refs": await git(
                "for-each-ref", "--format=%(refname) %(objectname)", "refs/replace"
            ),
        }
        paths = {"hooks": self.common / "hooks"}
        paths.update({name: self.common / name for name in _SETTING_FILES})
        modules = self.common / "modules"
        for module in await anyio.to_thread.run_sync(_module_dirs, modules):
            shown = module.relative_to(modules).as_posix()
            paths.update({f"modules/{shown}: {name}": module / name for name in _MODULE_FILES})
        # mesh's own git ignores hooks; the user's next commit would not.
        configured = await git.run(
            "config", "--file", str(self.common / "config"), "core.hooksPath"
        )
        if configured.exit_code == 0 and configured.text.strip():
            expanded = await anyio.to_thread.run_sync(os.path.expanduser, configured.text.strip())
            paths["core.hooksPath"] = self.repo / expanded
        for worktree in await self.worktrees():
            dot_git = worktree / ".git"
            if await anyio.Path(dot_git).is_file():
                paths[f"{worktree}/.git"] = dot_git
            else:
                state[f"{worktree}/.git"] = "folder"
            admin = await self.admin_dir(worktree)
            if admin is not None and admin != self.common:
                for name in ("config.worktree", "gitdir", "commondir"):
                    paths[f"{worktree}: {name}"] = admin / name
            await self._submodule_paths(worktree, paths, state, depth=0)
        return state | await anyio.to_thread.run_sync(_digests, paths)

    async def _submodule_paths(
        self, checkout: Path, paths: dict[str, Path], state: dict[str, str], *, depth: int
    ) -> None:
        """
        The ``.git`` of every submodule checked out in ``checkout``, and what it leads to.

        Found from the index's gitlinks at the top, from ``.gitmodules`` further
        down (mesh runs no git inside a submodule); a ``.git`` link rewritten to
        lead elsewhere, or a git folder of its own, counts like ``.git/modules``.
        """
        if depth == 0:
            try:
                staged = await Git(cwd=checkout).raw("ls-files", "-s", "-z")
            except GitError:
                return  # a broken worktree: its link's state says so
            entries = [
                entry.partition("\t")
                for entry in staged.decode("utf-8", "surrogateescape").split("\0")
            ]
            names = [name for info, _, name in entries if info.startswith(_GITLINK)]
        else:
            listed = await self.git().run(
                "config", "--file", str(checkout / ".gitmodules"), "--get-regexp",
                r"^submodule\..*\.path$",
            )  # fmt: skip
            names = [line.partition(" ")[2] for line in listed.text.split("\n") if " " in line]
        for name in names:
            inside = checkout / name
            dot_git = anyio.Path(inside / ".git")
            if await dot_git.is_symlink() or not await dot_git.is_file():
                state[f"{inside}/.git"] = (
                    "link" if await dot_git.is_symlink() else "folder" if await dot_git.is_dir()
                    else ""
                )  # fmt: skip
            else:
                paths[f"{inside}/.git"] = inside / ".git"
            found = await anyio.to_thread.run_sync(_git_dir_of, inside)
            if found is not None:
                if not found.resolve().is_relative_to(self.common / "modules"):
                    for setting in _MODULE_FILES:  # those under .git/modules count already
                        paths[f"{inside}/.git: {setting}"] = found / setting
                if depth < _NESTING_LIMIT:
                    await self._submodule_paths(inside, paths, state, depth=depth + 1)

    async def checkout_state(self, checkout: Path) -> CheckoutState:
        """What a checkout may hide from ``git status``, now."""
        git = Git(cwd=checkout)
        flagged = (await git.raw("ls-files", "-v", "-z")).decode("utf-8", "surrogateescape")
        hidden = frozenset(
            entry for entry in flagged.split("\0") if entry[:1].islower() or entry[:1] == "S"
        )
        others = await git.raw("ls-files", "--others", "--exclude-standard", "-z")
        # An ignore file can ignore itself (and what it was put there to hide).
        ignore_files = await git.raw(
            "ls-files", "--others", "--ignored", "--exclude-standard", "-z", "--",
            ":(glob)**/.gitignore",
        )  # fmt: skip
        mine = [
            path.relative_to(checkout).as_posix()
            for path in self.own_outputs
            if path.is_relative_to(checkout)
        ]
        untracked = frozenset(
            name
            for name in (others + b"\0" + ignore_files)
            .decode("utf-8", "surrogateescape")
            .split("\0")
            if name and not any(name == own or name.startswith(own + "/") for own in mine)
        )
        staged = (await git.raw("ls-files", "-s", "-z")).decode("utf-8", "surrogateescape")
        # "MODE OBJECT STAGE\tNAME"; a submodule (a gitlink) is a folder with its own life.
        entries = [entry.partition("\t") for entry in staged.split("\0") if entry]
        names = [name for info, _, name in entries if not info.startswith(_GITLINK)]
        times = await anyio.to_thread.run_sync(_change_times, checkout, names)
        return CheckoutState(hidden=hidden, untracked=untracked, times=times)

    async def snapshot(self, named_branch: str | None) -> TargetState:
        """The target as it is now."""
        branch = await self.branch(named_branch)
        checkouts = {}
        for checkout in await self.checkouts(branch):
            if await self.admin_dir(checkout) is not None:  # a broken one is refused later
                checkouts[str(checkout)] = await self.checkout_state(checkout)
        return TargetState(
            branch=branch,
            tip=await self.tip(branch),
            settings=await self.settings(),
            checkouts=checkouts,
        )

    async def problems(self, baseline: TargetState, tip: str) -> list[str]:
        """What stops a delivery onto ``tip``: changed settings, a moved branch, checkouts."""
        problems: list[str] = []
        now = await self.settings()
        changed = sorted(
            name
            for name in baseline.settings.keys() | now.keys()
            if baseline.settings.get(name) != now.get(name)
        )
        if changed:
            problems.append(
                "the repository's git settings changed during the run: " + ", ".join(changed)
            )
        current = await self.tip(baseline.branch)
        if current != tip:
            problems.append(await self._moved(baseline.branch, tip, current))
        for checkout in await self.checkouts(baseline.branch):
            before = baseline.checkouts.get(str(checkout))
            if before is None:  # the run started with it elsewhere, or without it
                problems.append(
                    f"the checkout {one_line(str(checkout))} switched to branch "
                    f"{baseline.branch} during the run"
                )
                continue
            problem = await self._checkout_problem(checkout, before)
            problems.extend([problem] if problem else [])
        return problems

    async def _moved(self, branch: str, expected: str, current: str | None) -> str:
        if current is None:
            return f"branch {branch} no longer exists"
        foreign = await self.git()("log", "--format=%h %s", "-3", f"{expected}..{current}")
        shown = (
            "; ".join(one_line(line, 120) for line in foreign.split("\n") if line)
            or "history rewritten"
        )
        return (
            f"branch {branch} moved outside mesh from {expected[:12]} to {current[:12]} ({shown})"
        )

    async def _checkout_problem(self, checkout: Path, before: CheckoutState | None) -> str | None:
        """Why a checkout of the branch may not be brought forward now (None: it may)."""
        problem = await self._git_problem(checkout)
        if problem is None and before is not None:
            problem = await self._hidden_problem(checkout, before)
        return problem

    async def _git_problem(self, checkout: Path) -> str | None:
        """What git itself sees: a broken link, an operation under way, uncommitted changes."""
        shown = one_line(str(checkout))
        admin = await self.admin_dir(checkout)
        if admin is None:
            return f"the checkout {shown} cannot be read"
        busy = [name for name in _OPERATIONS if (admin / name).exists()]
        if busy:
            return f"a git operation is under way in {shown} ({busy[0]})"
        git = Git(cwd=checkout)
        # Stat data goes stale without a change (a copied or touched checkout): refresh it,
        # as any `git status` would, so that only real changes count.
        await git.run("update-index", "-q", "--refresh")
        # A submodule counts by the commit it is at: looking at its work tree would run
        # git inside it, under its own config.
        staged = await git.run(
            "diff-index", "--cached", "--quiet", "--ignore-submodules=dirty", "HEAD", "--"
        )
        edited = await git.run("diff-files", "--quiet", "--ignore-submodules=dirty")
        if staged.exit_code != 0 or edited.exit_code != 0:
            return f"the checkout {shown} has uncommitted changes"
        return None

    async def _hidden_problem(self, checkout: Path, before: CheckoutState) -> str | None:
        """What ``git status`` would not show, compared with the snapshot."""
        shown = one_line(str(checkout))
        now = await self.checkout_state(checkout)
        if now.hidden != before.hidden:
            return (
                f"files of the checkout {shown} were marked assume-unchanged or "
                "skip-worktree during the run (edits to them would not show)"
            )
        if new := sorted(now.untracked - before.untracked):
            listed = ", ".join(describe_path(path) for path in new[:3])
            return f"new untracked files in the checkout {shown}: {listed}"
        if edited := await self._hidden_edits(Git(cwd=checkout), checkout, before, now):
            listed = ", ".join(describe_path(path) for path in edited[:3])
            return f"files of the checkout {shown} changed without git seeing it: {listed}"
        return None

    @staticmethod
    async def _hidden_edits(
        git: Git, checkout: Path, before: CheckoutState, now: CheckoutState
    ) -> list[str]:
        """Tracked files written since the snapshot whose content is not the index's."""
        touched = [
            name
            for name, time in now.times.items()
            if before.times and before.times.get(name) != time
        ]
        edited = []
        for name in touched:
            expected = await git.run("rev-parse", "--verify", "--quiet", f":{name}")
            path = checkout / name
            if await anyio.Path(path).is_symlink():
                link = await anyio.to_thread.run_sync(os.readlink, path)
                found = await git.run("hash-object", "--stdin", stdin=os.fsencode(link))
            else:  # a file (anything else cannot be hashed, and so counts as edited)
                found = await git.run("hash-object", f"--path={name}", "--", str(path))
            if found.text.strip() != expected.text.strip():
                edited.append(name)
        return edited

    @staticmethod
    def refreshed(baseline: TargetState, checkout: Path, names: Iterable[str]) -> TargetState:
        """``baseline`` with the change times of ``names`` in ``checkout`` read again."""
        before = baseline.checkouts.get(str(checkout))
        if before is None or not before.times:
            return baseline
        times = {**before.times, **_change_times(checkout, names)}
        checkouts = {**baseline.checkouts, str(checkout): attrs.evolve(before, times=times)}
        return attrs.evolve(baseline, checkouts=checkouts)
