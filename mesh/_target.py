"""
The delivery target's state: what the integrator checks before every delivery.

A snapshot is taken when a run starts (and kept in its run store, so that a
resumed run checks against the same one); before each delivery the target is
compared with it. What counts:

- **settings**: everything in the git directories that changes what git
  runs or reads: config files, hooks (and ``core.hooksPath``'s folder),
  attributes, excludes, grafts, shallow, alternates, replace refs, and each
  worktree's ``.git`` link and records;
- **the branch**: where its tip is;
- **each checkout of the branch**: clean as git says it (``git status``),
  and beyond what ``git status`` shows: no entry newly marked
  assume-unchanged or skip-worktree, no new untracked file (nor any new
  untracked ignore file, which could hide one), and no tracked file whose
  change time moved and whose content is not what the index says (an edit
  hidden by rewriting the index's stat data).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio
import attrs

from ._enums import FailureCode
from ._errors import MeshError
from ._gate import describe_path
from ._git import Git
from ._text import one_line

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
_HOOK_FILE_LIMIT: Final = 1 << 20
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


async def _file_digest(path: Path) -> str:
    """A file's content digest ("" when absent); a folder's listing and contents."""
    target = anyio.Path(path)
    if await target.is_file():
        return hashlib.sha256(await target.read_bytes()).hexdigest()
    if not await target.is_dir():
        return ""
    digest = hashlib.sha256()
    for entry in sorted([p async for p in target.iterdir()], key=lambda p: p.name):
        digest.update(entry.name.encode("utf-8", "surrogateescape") + b"\0")
        stat = await entry.stat()
        digest.update(f"{stat.st_mode:o}\0".encode())
        if await entry.is_file() and stat.st_size <= _HOOK_FILE_LIMIT:
            digest.update(await entry.read_bytes())
    return digest.hexdigest()


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
        for line in listing.split("\0"):
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
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
            "hooks": await _file_digest(self.common / "hooks"),
            "replace refs": await git(
                "for-each-ref", "--format=%(refname) %(objectname)", "refs/replace"
            ),
        }
        for name in _SETTING_FILES:
            state[name] = await _file_digest(self.common / name)
        # mesh's own git ignores hooks; the user's next commit would not.
        configured = await git.run(
            "config", "--file", str(self.common / "config"), "core.hooksPath"
        )
        if configured.exit_code == 0 and configured.text.strip():
            expanded = await anyio.to_thread.run_sync(os.path.expanduser, configured.text.strip())
            state["core.hooksPath"] = await _file_digest(self.repo / expanded)
        for worktree in await self.worktrees():
            dot_git = worktree / ".git"
            linked = await anyio.Path(dot_git).is_file()
            state[f"{worktree}/.git"] = await _file_digest(dot_git) if linked else "folder"
            admin = await self.admin_dir(worktree)
            if admin is not None and admin != self.common:
                for name in ("config.worktree", "gitdir", "commondir"):
                    state[f"{worktree}: {name}"] = await _file_digest(admin / name)
        return state

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
        tracked = (await git.raw("ls-files", "-z")).decode("utf-8", "surrogateescape")
        names = [name for name in tracked.split("\0") if name]
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
        staged = await git.run("diff-index", "--cached", "--quiet", "HEAD", "--")
        edited = await git.run("diff-files", "--quiet")
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
