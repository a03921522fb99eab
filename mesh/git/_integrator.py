"""
The integrator: the only writer of the target repository and of plan state.

Delivery is where untrusted work meets the user's repository, so nothing is
taken on trust, not even mesh's own description of the change:

1. The candidate's patch goes through the scope gate again (git's reading of
   it, judged against the unit's scope and ``allow_special``).
2. The accepted candidate becomes a ``git am`` mailbox. Untrusted text in it
   (the objective, the proof's command and key line) is kept to single lines
   behind fixed prefixes, so it can neither end the message nor start a
   patch or a trailer; git's own ``mailinfo`` then reads the mailbox back and
   must find exactly the message and the patch mesh meant.
3. ``commit_first``: the commit is made with ``git am`` in mesh's private
   shadow repository, never in the user's checkout, with no hooks and no
   user config. The commit git produced is judged before the branch moves:
   its one parent is the branch tip, its message is exactly the expected
   one, and the paths and modes it changes pass the gate.
4. The target is checked: its git settings (config, hooks, attributes,
   alternates, replace refs, worktree links) are as they were when the run
   started, the branch tip is where mesh last left it (no foreign commits),
   and every checkout of the branch is clean with no git operation under
   way. Then the branch moves by compare-and-swap (``git update-ref NEW
   OLD``) and each checkout of the branch is brought forward.

Anything that does not hold is ``blocked_delivery`` with evidence (failure
code ``delivery_blocked``, or ``scope_violation`` for a patch the gate
refuses), never a silent success. Plan state is written only after delivery.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final

import anyio
import attrs

from ..contracts._enums import Decision, DeliveryMode, FailureCode, Lane
from ..contracts._errors import MeshError
from ..contracts._files import atomic_write_text
from ..contracts._gate import gate_problems
from ..contracts._text import one_line
from ..engine._roles import DeliveryRequest, result_document
from ..host._owner import stale_locks
from ..host._process import key_line
from ._adapters import judge_patch
from ._git import Git, GitError
from ._target import Target, TargetState
from ._workspaces import WorkspaceManager, source_problems

__all__ = ["GitIntegrator", "commit_message", "mailbox", "parse_trailers"]

_SUBJECT_LIMIT: Final = 200
_FIELD_LIMIT: Final = 500
_TRAILER: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*): (.*)")
_PLAIN_SUBJECT: Final = re.compile(r"[ -~]*")
_NONE_PENDING: Final[Mapping[str, DeliveryRequest]] = MappingProxyType({})
# The date at the end of an author or committer: " SECONDS ZONE", as git writes it.
_DATE: Final = re.compile(r" ([1-9][0-9]{0,10}) ([+-])([01][0-9])([0-5][0-9])\Z")


def _when(identity: str) -> tuple[datetime, str] | None:
    """
    The moment an author or committer line names, and the same as git reads it back.

    None when it is not a date git itself writes (none, out of range, odd zone).
    """
    found = _DATE.search(identity)
    if found is None:
        return None
    seconds, sign, hours, minutes = found.groups()
    offset = (int(hours) * 60 + int(minutes)) * (1 if sign == "+" else -1)
    # At most eleven digits (before the year 5138) and under twenty hours: always a datetime.
    moment = datetime.fromtimestamp(int(seconds), timezone(timedelta(minutes=offset)))
    return moment, f"@{seconds} {sign}{hours}{minutes}"


def _evidence(command: str, line: str, exit_code: int | None) -> dict[str, object]:
    return {
        "command": command,
        "key_line": line,
        "exit_code": -1 if exit_code is None else exit_code,
    }


def _subject(request: DeliveryRequest) -> str:
    unit = request.unit
    return " ".join(one_line(unit.objective, _SUBJECT_LIMIT).split()) or unit.id


def _body(request: DeliveryRequest) -> str:
    proof = request.proof.proof_evidence
    return (
        f"Proof: {one_line(proof.command, _FIELD_LIMIT)} -> "
        f"{one_line(proof.key_line, _FIELD_LIMIT)}\n"
        f"Approvals: {request.approvals}\n\n"
        f"Mesh-Unit: {one_line(request.unit.id)}\n"
        f"Mesh-Candidate: {one_line(request.candidate_id)}\n"
        + (
            f"Mesh-Delivery: {one_line(request.idempotency_key)}\n"
            if request.idempotency_key
            else ""
        )
    )


def commit_message(request: DeliveryRequest) -> str:
    """
    The exact message of the commit that delivers ``request``.

    .. versionadded:: 0.1.0
    """
    return f"{_subject(request)}\n\n{_body(request)}"


def _encoded_subject(subject: str) -> str:
    # Plain ASCII goes as it is; anything else (or text that looks like an
    # encoded word) is encoded, so that mailinfo decodes exactly this text.
    if _PLAIN_SUBJECT.fullmatch(subject) and "=?" not in subject:
        return subject
    return Header(subject, "utf-8", maxlinelen=998).encode()


def mailbox(request: DeliveryRequest, *, author: str, when: datetime | None = None) -> str:
    """
    The accepted candidate as one ``git am -k`` message, trailers naming unit and candidate.

    Untrusted text stays on lines that start with mesh's own words: it can
    neither end the message, nor start a patch, nor add a trailer.

    .. versionadded:: 0.1.0
    """
    moment = format_datetime(when or datetime.now(UTC))
    patch = request.candidate.patch or ""
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {one_line(author)}\nDate: {moment}\n"
        f"Subject: {_encoded_subject(_subject(request))}\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
        "Content-Transfer-Encoding: 8bit\n\n"
        f"{_body(request)}---\n{patch}" + ("" if patch.endswith("\n") else "\n")
    )


def parse_trailers(message: str) -> dict[str, list[str]]:
    r"""
    The trailers of a commit message, found strictly.

    Only the last paragraph counts, and only when every one of its lines is
    ``Key: value``; anything else means the message has no trailers.

    >>> parse_trailers("Fix\n\nMesh-Unit: u1\nMesh-Delivery: run/u1\n")["Mesh-Unit"]
    ['u1']
    >>> parse_trailers("Fix\n\nMesh-Unit: u1\nnot a trailer\n")
    {}

    .. versionadded:: 0.1.0
    """
    paragraphs = message.rstrip("\n").split("\n\n")
    if len(paragraphs) < 2:  # noqa: PLR2004 - a subject, then trailers at the least
        return {}
    found: dict[str, list[str]] = {}
    for line in paragraphs[-1].split("\n"):
        match = _TRAILER.fullmatch(line)
        if match is None:
            return {}
        found.setdefault(match[1], []).append(match[2])
    return found


@attrs.frozen(kw_only=True)
class _Blocked(Exception):
    """Why this delivery cannot happen."""

    line: str
    notes: str | None = None
    code: FailureCode = FailureCode.DELIVERY_BLOCKED


class GitIntegrator:
    """
    The only writer: delivers the accepted candidate, then writes plan state.

    ``patch_first`` units: the patch is written as a ``git am``-ready artifact
    under ``artifacts``. ``commit_first`` units: the patch becomes a commit on
    ``branch`` (default: the branch checked out in the repository), made with
    ``git am -3`` in mesh's private shadow repository, judged, and then put on
    the branch by compare-and-swap; every checkout of the branch is brought
    forward. See the module ``mesh.git._integrator`` for every check. A delivery
    that cannot happen is ``blocked_delivery`` with evidence. Only after
    delivery is ``plan_state`` written to ``plan_path``.

    Delivery is idempotent: each commit carries a ``Mesh-Delivery`` trailer
    with the request's idempotency key, and a key already on the branch is
    answered with that commit instead of a second one.

    The target is checked against the state this integrator first saw (at
    `prepare`, called by the first delivery when nobody called it before).

    .. versionadded:: 0.1.0
    """

    rerun_safe = True
    """A delivery a crash interrupted is checked against the repository, never made twice."""

    def __init__(
        self,
        workspaces: WorkspaceManager,
        *,
        artifacts: str | os.PathLike[str],
        plan_path: str | os.PathLike[str] | None = None,
        branch: str | None = None,
        author: str = "mesh <mesh@localhost>",
    ) -> None:
        self.workspaces = workspaces
        self.artifacts = Path(artifacts)
        self.plan_path = Path(plan_path) if plan_path is not None else None
        self.branch = branch
        self.author = author
        self._lock = anyio.Lock()
        self._prepared = False
        self._branch = ""
        self._tip: str | None = None
        self._start_tip: str | None = None
        """The branch tip when the target was taken: the history a resume may find keys in."""
        self._made: dict[str, str] = {}
        """Delivery keys this integrator committed, and their commits."""
        self._opened: Target | None = None
        self._baseline = TargetState(branch="", tip=None, settings={}, checkouts={})

    # -- the target's state --------------------------------------------------------

    @property
    def _target(self) -> Target:
        """The repository delivered to (the workspaces must be open by then)."""
        if self._opened is None:
            outputs = [self.artifacts]
            if self.plan_path is not None:
                outputs.append(self.plan_path.parent)
            self._opened = Target(
                self.workspaces.repo, self.workspaces.common_dir, own_outputs=outputs
            )
        return self._opened

    async def prepare(self, baseline: TargetState | None = None) -> None:
        """
        Take the state every delivery is checked against: ``baseline``, else the target now.

        A resumed run passes the state its run store kept, so that what
        changed while no process was running counts as changed.
        """
        now = await self._target.snapshot(self.branch)
        if baseline is not None:
            # A kept state has no change times (they stay with the process that read
            # them): from now on, at least, a hidden edit is seen.
            baseline = attrs.evolve(
                baseline,
                checkouts={
                    path: attrs.evolve(state, times=now.checkouts[path].times)
                    if path in now.checkouts
                    else state
                    for path, state in baseline.checkouts.items()
                },
            )
        self._baseline = now if baseline is None else baseline
        self._branch = self._baseline.branch
        self._tip = self._start_tip = self._baseline.tip if baseline is not None else now.tip
        self._made = {}
        self._prepared = True

    async def _checkouts(self) -> list[Path]:
        return await self._target.checkouts(self._branch)

    # -- delivering ----------------------------------------------------------------

    async def recover(
        self,
        baseline: TargetState | None = None,
        *,
        delivered: Sequence[str] = (),
        pending: Mapping[str, DeliveryRequest] = _NONE_PENDING,
    ) -> None:
        """
        Before resuming a run: take the commits the dead process made, then `prepare`.

        A process killed while delivering may have left its commit on the branch
        and a checkout of the branch one commit behind (maybe with some of its
        files written). Only a commit that is verifiably mesh's own is taken:
        exactly one parent, mesh's headers and identity, the exact message of a
        pending delivery, and the very tree that delivering that request again
        on its parent makes. A checkout behind such a commit is brought forward
        when every file involved is either the old or the new version;
        otherwise this raises, naming the checkout, and nothing is touched.

        Args:
            baseline: The state the run started from (kept in its run store);
                without it the target as it is now is taken.
            delivered: The commits the run delivered, in order: the branch is
                expected where the last one left it.
            pending: The deliveries that had started when the run stopped, by
                idempotency key. Commits on the expected tip that are exactly
                theirs are taken; any other commit there is foreign, and
                deliveries are blocked until the branch is put back.
        """
        target = self._target
        branch = await target.branch(self.branch)
        tip = await target.tip(branch)
        last = (delivered[-1] if delivered else baseline.tip) if baseline is not None else None
        reached, made = await self._own_commits(tip, last, pending)
        if baseline is not None and (reached != last or last is None):
            made = {}  # something foreign under them: deliveries stay blocked, with evidence
        # Only a commit mesh made, or one it recorded as delivered, reaches a checkout.
        trusted = tip is not None and (bool(made) or tip == last)
        checkouts = []
        for checkout in await target.checkouts(branch):
            admin = await target.admin_dir(checkout)
            if admin is not None:  # a broken checkout: the next delivery says so
                checkouts.append((checkout, admin))
        await self._clear_stale_locks(branch, [admin for _, admin in checkouts])
        for checkout, _ in checkouts:
            if trusted and tip is not None:
                await self._bring_forward_after_crash(checkout, tip)
        await self.prepare(baseline)
        if baseline is not None:
            self._tip = self._start_tip = tip if made else last
        self._made = made

    async def _clear_stale_locks(self, branch: str, admins: Sequence[Path]) -> None:
        """
        Remove the git locks a killed delivery can leave whose writer is gone.

        ``update-ref`` locks the branch (and ``HEAD``, whose log it writes), and
        ``read-tree`` a checkout's index. A lock some live process holds open
        stays: the delivery then reports it.
        """
        common = self._target.common
        candidates = [common / "HEAD.lock"]
        if branch:
            candidates.append(common / "refs" / "heads" / f"{branch}.lock")
        for admin in admins:
            candidates += [admin / "index.lock", admin / "HEAD.lock"]
        for lock in await anyio.to_thread.run_sync(stale_locks, candidates):
            await anyio.Path(lock).unlink(missing_ok=True)

    async def _own_commits(
        self, tip: str | None, last: str | None, pending: Mapping[str, DeliveryRequest]
    ) -> tuple[str | None, dict[str, str]]:
        """
        Back from ``tip`` over commits verifiably made for ``pending``, at most one each.

        Where the walk stopped (``last``, when every commit after it is mesh's),
        and the commits taken, by key.
        """
        made: dict[str, str] = {}
        current = tip
        while current is not None and current != last and len(made) < len(pending):
            parent, key = await self._made_for(current, pending)
            if key is None or key in made:
                break
            made[key] = current
            current = parent
        return current, made

    async def _made_for(
        self, commit: str, pending: Mapping[str, DeliveryRequest]
    ) -> tuple[str | None, str | None]:
        """The parent of ``commit``, and the pending key it is exactly mesh's commit for."""
        headers, _, text = (await self._commit_text(commit)).partition("\n\n")
        fields = [line.partition(" ") for line in headers.split("\n")]
        names = [name for name, _, _ in fields]
        if names != ["tree", "parent", "author", "committer"]:
            return None, None  # a root, a merge, a signature, an encoding: not mesh's
        _, parent, author, committer = (value for _, _, value in fields)
        keys = parse_trailers(text).get("Mesh-Delivery", [])
        request = pending.get(keys[0]) if len(keys) == 1 else None
        authored, committed = _when(author), _when(committer)
        if request is None or authored is None or committed is None:
            return parent, None
        try:
            # Delivered again on the same parent at the same moments, the request must
            # make this very commit, byte for byte (the same object id).
            message = mailbox(request, author=self.author, when=authored[0])
            again = await self._commit(message, parent, committer_date=committed[1])
            if again != commit:
                return parent, None
            await self._gate_commit(parent, commit, request)
        except (_Blocked, GitError):
            return parent, None
        return parent, keys[0]

    async def _commit_text(self, commit: str) -> str:
        """A commit object of the target exactly as stored (no newline taken off)."""
        raw = await self.workspaces.target().raw("cat-file", "commit", commit)
        return raw.decode("utf-8", "surrogateescape")

    async def _bring_forward_after_crash(self, checkout: Path, tip: str) -> None:
        """A checkout one (trusted) commit behind ``tip``, and nothing else, is brought forward."""
        git = Git(cwd=checkout)
        if (await git.run("diff-index", "--cached", "--quiet", tip, "--")).exit_code == 0:
            return  # the index is at the tip already
        parent = (await git.run("rev-parse", "--verify", "--quiet", f"{tip}^1")).text.strip()
        if (
            not parent
            or (await git.run("diff-index", "--cached", "--quiet", parent, "--")).exit_code
        ):
            return  # not the state mesh leaves (a root commit, the user's own changes)
        if (await git.run("read-tree", "-m", "-u", parent, tip)).exit_code == 0:
            return
        # Killed while writing files: each one must be the old or the new version.
        raw = await git.raw("diff-tree", "-r", "-z", "--no-renames", "--name-only", parent, tip)
        for name in filter(None, raw.decode("utf-8", "surrogateescape").split("\0")):
            if not await self._old_or_new(git, checkout, name, parent, tip):
                raise MeshError(
                    f"{one_line(str(checkout))}: {one_line(name)} is neither the version "
                    f"before nor after mesh's commit {tip[:12]}: bring the checkout to "
                    "the branch tip by hand, then resume",
                    code=FailureCode.DELIVERY_BLOCKED,
                )
        await git("read-tree", "--reset", "-u", tip)

    @staticmethod
    async def _old_or_new(git: Git, checkout: Path, name: str, parent: str, tip: str) -> bool:
        versions = set()
        for commit in (parent, tip):
            result = await git.run("rev-parse", "--verify", "--quiet", f"{commit}:{name}")
            versions.add(result.text.strip() if result.exit_code == 0 else "")
        path = checkout / name
        if not (path.exists() or path.is_symlink()):
            return "" in versions
        if path.is_symlink() or not path.is_file():
            return False
        found = await git.run("hash-object", f"--path={name}", "--", str(path))
        return found.exit_code == 0 and found.text.strip() in versions

    async def _earlier(self, request: DeliveryRequest) -> str | None:
        """
        The commit that already delivered this request, if any: a retry, or a resumed run.

        A retry finds the commit this integrator made. Otherwise only the
        branch as it was when the target was taken (`prepare`, `recover`) is
        searched: a commit that appeared since was not made here, and is
        foreign even if it carries the key. A commit found there must still
        be exactly what mesh would make (message, and a change the gate passes).
        """
        if not self._prepared:
            await self.prepare()
        key = request.idempotency_key
        if not key:
            return None
        if key in self._made:
            return self._made[key]
        earlier = await self._delivered(request, self._start_tip)
        if earlier is not None:
            await self._judge_earlier(earlier, request)
        return earlier

    async def _delivered(self, request: DeliveryRequest, tip: str | None) -> str | None:
        """The commit in ``tip``'s history that delivered this key, found strictly, if any."""
        if tip is None:
            return None
        key = request.idempotency_key
        found = await self.workspaces.target().raw(
            "log",
            "-z",
            "--format=%H%n%B",
            "--fixed-strings",
            f"--grep=Mesh-Delivery: {key}",
            tip,
            "--",
        )
        for record in found.decode(errors="replace").split("\0"):
            sha, _, message = record.partition("\n")
            trailers = parse_trailers(message)
            if trailers.get("Mesh-Delivery") == [key] and trailers.get("Mesh-Unit") == [
                request.unit.id
            ]:
                return sha
        return None

    async def _judge_earlier(self, commit: str, request: DeliveryRequest) -> None:
        """A commit that claims this delivery must be one mesh would have made."""
        target = self.workspaces.target()
        raw = await target("cat-file", "commit", commit)
        headers, _, text = raw.partition("\n\n")
        parents = [line[7:] for line in headers.split("\n") if line.startswith("parent ")]
        if len(parents) != 1 or text + "\n" != commit_message(request):
            raise _Blocked(
                line=f"commit {commit[:12]} carries this delivery's key, "
                "but it is not the commit mesh would have made"
            )
        await self._gate_commit(parents[0], commit, request)

    async def _committer(self) -> dict[str, str]:
        """Who commits: the repository's configured identity, else the author."""
        name, _, email = self.author.partition(" <")
        identity = {"name": name, "email": email.rstrip(">")}
        for field in ("name", "email"):
            # The user's own config holds the identity; reading a value runs nothing.
            result = await anyio.run_process(
                ["git", "config", "--get", f"user.{field}"],
                cwd=self.workspaces.repo,
                check=False,
                env={
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith("GIT_") or k == "GIT_EXEC_PATH"
                },
            )
            value = result.stdout.decode(errors="replace").strip()
            if result.returncode == 0 and value and one_line(value) == value:
                identity[field] = value
        return {
            "GIT_COMMITTER_NAME": identity["name"],
            "GIT_COMMITTER_EMAIL": identity["email"],
        }

    async def _check_mailbox(self, message: str, request: DeliveryRequest) -> str | None:
        """Read the mailbox as ``git am -k`` will: it must say exactly what mesh meant."""
        folder = self.workspaces.folder / f"mailinfo-{secrets.token_hex(6)}"
        await anyio.Path(folder).mkdir()
        try:
            shadow = self.workspaces.shadow()
            result = await shadow.run(
                "mailinfo",
                "-k",
                "-u",
                str(folder / "msg"),
                str(folder / "patch"),
                stdin=message.encode(),
            )
            if result.exit_code != 0:
                return f"git mailinfo cannot read the mailbox: {key_line(result.errors)}"
            read_body = await anyio.Path(folder / "msg").read_text(errors="replace")
            read_patch = await anyio.Path(folder / "patch").read_text(errors="replace")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_remove_folder, folder)
        info = dict(line.partition(": ")[::2] for line in result.text.split("\n") if ": " in line)
        patch = request.candidate.patch or ""
        patch = patch if patch.endswith("\n") else patch + "\n"
        if info.get("Subject") != _subject(request):
            return "git reads a different subject from the mailbox"
        if read_body != _body(request):
            return "git reads a different message from the mailbox"
        if read_patch != "---\n" + patch:
            return "git reads a different patch from the mailbox"
        return None

    async def _commit(self, message: str, tip: str, *, committer_date: str | None = None) -> str:
        """``git am -k -3`` in the shadow repository, on ``tip``; the commit it made."""
        folder = self.workspaces.folder
        delivery = folder / "delivery"
        await anyio.Path(delivery).mkdir(exist_ok=True)
        environment = await self._committer()
        if committer_date is not None:
            environment["GIT_COMMITTER_DATE"] = committer_date
        git = self.workspaces.shadow(
            work_tree=delivery,
            index_file=folder / "indexes" / "delivery",
            environment=environment,
        )
        await git("read-tree", "--reset", "-u", tip)
        await git("clean", "-ffdxq")
        await git("update-ref", "--no-deref", "HEAD", tip)
        applied = await git.run("am", "-k", "-3", "--keep-cr", stdin=message.encode())
        if applied.exit_code != 0:
            await git.run("am", "--abort")
            raise _Blocked(
                line=f"git am on {self._branch}: {key_line(applied.errors)}",
                notes=applied.errors.strip(),
            )
        return await git("rev-parse", "--verify", "HEAD^{commit}")

    async def _judge_commit(self, commit: str, tip: str, request: DeliveryRequest) -> None:
        """
        The commit git made must be exactly the one mesh meant, before the branch moves.

        Judged in the target, after its objects were copied there: an object
        planted in the shadow repository (which git does not hash again when it
        reads it) could make the commit look like something it is not.
        """
        headers, _, text = (await self._commit_text(commit)).partition("\n\n")
        parents = [line[7:] for line in headers.split("\n") if line.startswith("parent ")]
        if commit == tip:
            raise _Blocked(line=f"the patch changes nothing on {self._branch}")
        if parents != [tip]:
            raise _Blocked(line=f"git am made {len(parents)} parents, not one on {tip[:12]}")
        if text != commit_message(request):
            raise _Blocked(line="the commit's message is not the one mesh wrote")
        await self._gate_commit(tip, commit, request)

    async def _gate_commit(self, parent: str, commit: str, request: DeliveryRequest) -> None:
        """The scope gate on what ``commit`` changes against ``parent``."""
        reading = await self.workspaces.read_trees(parent, commit, in_target=True)
        unit = request.unit
        problems = gate_problems(
            reading.changes,
            write_scope=unit.write_scope,
            allow_special=unit.allow_special,
            links=reading.links,
            base_links=reading.base_links,
        )
        if problems:
            raise _Blocked(
                line=f"scope: {problems[0]}",
                notes="; ".join(problems),
                code=FailureCode.SCOPE_VIOLATION,
            )

    async def _copy_objects(self, commit: str, tip: str) -> None:
        """The new commit's objects into the target's object store (nothing refers to them yet)."""
        pack = await self.workspaces.shadow().raw(
            "pack-objects", "--revs", "--stdout", "-q", stdin=f"{commit}\n^{tip}\n".encode()
        )
        await self.workspaces.target().raw("unpack-objects", "-q", stdin=pack)

    async def _move_branch(self, commit: str, tip: str, key: str) -> list[str]:
        """Compare-and-swap the branch, then bring its checkouts forward; what could not be."""
        checkouts = await self._checkouts()
        for checkout in checkouts:
            dry = await Git(cwd=checkout).run("read-tree", "-m", "-u", "-n", tip, commit)
            if dry.exit_code != 0:
                raise _Blocked(
                    line=f"the checkout {one_line(str(checkout))} is in the way: "
                    f"{key_line(dry.errors)}"
                )
        moved = await self.workspaces.target().run(
            "update-ref", "-m", f"mesh: deliver {key}", f"refs/heads/{self._branch}", commit, tip
        )
        if moved.exit_code != 0:
            raise _Blocked(
                line=f"branch {self._branch} moved while delivering: {key_line(moved.errors)}"
            )
        self._tip = commit
        self._made[key] = commit
        behind = []
        written = await self._target.git().raw(
            "diff-tree", "-r", "-z", "--no-renames", "--name-only", tip, commit
        )
        names = [name for name in written.decode("utf-8", "surrogateescape").split("\0") if name]
        for checkout in checkouts:
            updated = await Git(cwd=checkout).run("read-tree", "-m", "-u", tip, commit)
            if updated.exit_code != 0:
                behind.append(f"{one_line(str(checkout))}: {key_line(updated.errors)}")
            # Files mesh itself just wrote are not hidden edits.
            self._baseline = self._target.refreshed(self._baseline, checkout, names)
        return behind

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return source_problems(self.workspaces)

    async def __call__(self, request: DeliveryRequest) -> dict[str, object]:
        """Deliver as the unit's delivery mode says; write plan state after success."""
        unit = request.unit
        candidate = request.candidate

        def answer(decision: Decision, line: str, **fields: object) -> dict[str, object]:
            return result_document(
                unit,
                candidate_id=request.candidate_id,
                lane=Lane.INTEGRATOR,
                decision=decision,
                triplet_index=candidate.triplet_index,
                base_sha=candidate.base_sha,
                proof_status="pass",
                proof_attempts=request.proof.proof_attempts,
                proof_evidence=_evidence(
                    "deliver", line, 0 if decision is not Decision.BLOCKED_DELIVERY else 1
                ),
                **fields,
            )

        try:
            async with self._lock:
                decision, reference, line, notes = await self._deliver(request)
        except _Blocked as blocked:
            return answer(
                Decision.BLOCKED_DELIVERY,
                blocked.line,
                notes=blocked.notes,
                failure_code=blocked.code.value,
            )
        if self.plan_path is not None:
            await _write(self.plan_path, json.dumps(request.plan_state, indent=2) + "\n")
        return answer(
            decision,
            line,
            artifact_ref=reference,
            scope_assertion=f"within write_scope {list(unit.write_scope)}",
            patch_sha256=hashlib.sha256((candidate.patch or "").encode()).hexdigest(),
            notes=notes,
        )

    async def _deliver(self, request: DeliveryRequest) -> tuple[Decision, str, str, str | None]:
        unit = request.unit
        commit_first = unit.delivery_mode is DeliveryMode.COMMIT_FIRST
        if commit_first and (earlier := await self._earlier(request)) is not None:
            line = f"already delivered as {earlier[:12]} on {self._branch}"
            return Decision.INTEGRATED_COMMIT, earlier, line, None
        patch = request.candidate.patch or ""
        verdict = await judge_patch(self.workspaces, unit, request.candidate.base_sha, patch)
        if verdict.problems:
            raise _Blocked(
                line=f"scope: {verdict.problems[0]}",
                notes="; ".join(verdict.problems),
                code=FailureCode.SCOPE_VIOLATION,
            )
        applies = verdict.reading is not None and verdict.reading.applies
        if not (applies or commit_first):
            # A commit is judged as git made it; an artifact only as git reads it at its base.
            evidence = verdict.reading.evidence if verdict.reading else ""
            raise _Blocked(line=f"the patch does not apply: {key_line(evidence)}", notes=evidence)
        message = mailbox(request, author=self.author)
        if problem := await self._check_mailbox(message, request):
            raise _Blocked(line=problem)
        artifact = self.artifacts / unit.id / f"{request.candidate_id}.patch"
        await _write(artifact, message)
        if not commit_first:
            return Decision.INTEGRATED_PATCH, str(artifact), f"patch at {artifact}", None
        return await self._deliver_commit(request, message)

    async def _deliver_commit(
        self, request: DeliveryRequest, message: str
    ) -> tuple[Decision, str, str, str | None]:
        tip = self._tip
        if not self._branch:
            raise _Blocked(line="HEAD is detached: name the branch to deliver to (--branch)")
        if tip is None:
            raise _Blocked(line=f"branch {self._branch} has no commit to deliver onto")
        if problems := await self._target.problems(self._baseline, tip):
            raise _Blocked(line=problems[0], notes="; ".join(problems))
        commit = await self._commit(message, tip)
        await self._copy_objects(commit, tip)
        await self._judge_commit(commit, tip, request)
        # From here the branch moves: a cancelled call must not leave it half recorded.
        with anyio.CancelScope(shield=True):
            key = request.idempotency_key or request.unit.id
            behind = await self._move_branch(commit, tip, key)
        notes = ("checkout not brought forward: " + "; ".join(behind)) if behind else None
        return (
            Decision.INTEGRATED_COMMIT,
            commit,
            f"committed {commit[:12]} on {self._branch}",
            notes,
        )


def _remove_folder(folder: Path) -> None:
    for entry in folder.iterdir():
        entry.unlink()
    folder.rmdir()


async def _write(path: Path, text: str) -> None:
    await anyio.to_thread.run_sync(
        lambda: atomic_write_text(path, text, what="delivery output", create_parents=True)
    )
