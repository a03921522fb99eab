"""
Coders that turn edits in a scratch worktree into candidate patches.

Each coder checks out the unit's base in a worktree of its own, lets something
edit the files (an external agent CLI, a Python callable, a script of file
contents), and returns ``git diff`` of the result as the candidate: ``accept``
with the patch, ``no_diff`` when nothing changed, ``reject`` when the editor
failed. The applier later checks the patch against the write scope.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shlex
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final

import anyio

from ..contracts._enums import Decision, Lane
from ..contracts._errors import OptionError
from ..engine._roles import AuthorRequest, invoke, result_document
from ..host._process import key_line, run_command
from ..host._sandbox import Sandbox
from ._template import template_problem
from ._workspaces import Workspace, WorkspaceSource, checkout_at, source_problems

__all__ = [
    "CallableCoder",
    "CommandCoder",
    "ScriptedCoder",
    "check_command_template",
    "diff_candidate",
    "rejected",
]

_RECORD_LIMIT: Final = 1 << 20
FileEdits = Mapping[str, str | None]
"""Repository-relative path → new content (``None`` deletes the file)."""

_PLACEHOLDERS: Final = (
    "unit_id",
    "candidate_id",
    "lane",
    "triplet_index",
    "attempt",
    "objective",
    "write_scope",
    "proof_command",
    "constraints",
    "invariants",
    "worktree",
)


def render_command(template: str, values: Mapping[str, str]) -> str:
    """Fill a command template (checked as `check_command_template` does) with quoted values."""
    check_command_template(template)
    try:
        return template.format_map({name: shlex.quote(value) for name, value in values.items()})
    except KeyError as exc:
        raise OptionError(
            "InvalidOptionValue", f"command template {template!r}: no value for placeholder {exc}"
        ) from None


def check_command_template(template: str) -> None:
    """
    Raise `OptionError` unless every field of ``template`` is a safe, known placeholder.

    mesh shell-quotes every value, so a placeholder is written bare
    (``agent {objective}``, ``--prompt={objective}``), where the shell reads
    it as code. Refused: unknown names; conversions, format specs, attribute
    or index access and positional fields; a placeholder inside single, double
    or ``$'...'`` quotes, backticks, ``$(...)``, a comment or after a
    here-document, or right after a backslash or a ``$``. ``{{`` and ``}}``
    are literal braces.

    .. versionadded:: 0.1.0
    """
    problem = template_problem(template, _PLACEHOLDERS)
    if problem is not None:
        raise OptionError("InvalidOptionValue", f"command template {template!r}: {problem}")


def _fields(request: AuthorRequest, workspace: Workspace) -> dict[str, str]:
    unit = request.unit
    return {
        "unit_id": unit.id,
        "candidate_id": request.candidate_id,
        "lane": request.lane.value,
        "triplet_index": str(request.triplet_index),
        "attempt": str(request.attempt),
        "objective": unit.objective,
        "write_scope": " ".join(unit.write_scope),
        "proof_command": unit.proof_command,
        "constraints": unit.constraints,
        "invariants": unit.invariants,
        "worktree": str(workspace.path),
    }


def _measured_reduce_record(request: AuthorRequest, patch: str) -> dict[str, object]:
    """A reduce record from facts only: what the diff adds and removes."""
    lines = patch.split("\n")
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return {
        "target_abstraction": ", ".join(request.unit.write_scope),
        "replacement_primitive": "the reducer's own patch",
        "complexity_delta": f"+{added}/-{removed} lines",
        "invariants_preserved": [request.unit.invariants or "the unit's proof_command"],
        "rollback_plan": "drop the patch, or git revert its commit",
    }


async def diff_candidate(
    request: AuthorRequest,
    workspace: Workspace,
    *,
    notes: str | None = None,
    reduce_record: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """
    The edits made in ``workspace`` as a candidate answer to ``request``.

    The diff is taken by mesh's own git directory and index for the workspace
    (see `WorkspaceManager`), never by the workspace's ``.git``, which the
    agent may have rewritten.

    A reducer's candidate carries ``reduce_record``; without one, a record of
    measured facts (scope, lines added and removed) is attached.

    .. versionadded:: 0.1.0
    """
    # Read through mesh's own index and git directory: the workspace's .git is the agent's.
    git = workspace.git()
    await git("add", "--all")
    patch = await git(
        "diff", "--cached", "--binary", "--full-index", "--no-color", "--no-ext-diff", workspace.sha
    )
    common: dict[str, object] = {"base_sha": workspace.sha, "notes": notes}
    if request.lane is Lane.REDUCER and patch.strip():
        common["reduce_record"] = dict(reduce_record or _measured_reduce_record(request, patch))
    if not patch.strip():
        return result_document(
            request.unit,
            candidate_id=request.candidate_id,
            lane=request.lane,
            decision=Decision.NO_DIFF,
            triplet_index=request.triplet_index,
            **{**common, "notes": notes or "no change"},
        )
    return result_document(
        request.unit,
        candidate_id=request.candidate_id,
        lane=request.lane,
        decision=Decision.ACCEPT,
        triplet_index=request.triplet_index,
        patch=patch + "\n",
        **common,
    )


def rejected(request: AuthorRequest, workspace: Workspace, reason: str) -> dict[str, object]:
    """A candidate's ``reject`` answer to ``request``, written in ``workspace``, saying why."""
    return result_document(
        request.unit,
        candidate_id=request.candidate_id,
        lane=request.lane,
        decision=Decision.REJECT,
        triplet_index=request.triplet_index,
        base_sha=workspace.sha,
        notes=reason,
    )


class CommandCoder:
    """
    Runs any agent command line in a scratch worktree and diffs what it changed.

    ``command`` is a shell template; ``{objective}``, ``{unit_id}``,
    ``{candidate_id}``, ``{lane}``, ``{triplet_index}``, ``{attempt}``,
    ``{write_scope}``, ``{proof_command}``, ``{constraints}``, ``{invariants}``
    and ``{worktree}`` are replaced by the unit's values, each shell-quoted
    (write literal braces as ``{{`` and ``}}``). The
    same values are in the environment as ``MESH_OBJECTIVE``, ``MESH_UNIT_ID``
    and so on. The command runs in the workspace under ``timeout`` seconds,
    and nothing it starts outlives the call (see `run_command`); a non-zero
    exit is a ``reject``. With a ``sandbox`` (`mesh.Sandbox`) it runs in
    bubblewrap: the system read-only, only the workspace writable. A reducer
    may write its reduce record as JSON to the file named by
    ``MESH_REDUCE_RECORD``; otherwise one of measured facts is attached.

    Example: ``CommandCoder(workspaces, "my-agent exec --prompt {objective}")``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        workspaces: WorkspaceSource,
        command: str,
        *,
        timeout: float = 1800.0,
        env: Mapping[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.command = command
        self.timeout = timeout
        self.env = env
        self.sandbox = sandbox
        # Fail at construction, not at the first unit, on a template with unknown fields.
        check_command_template(command)

    def render(self, values: Mapping[str, str]) -> str:
        """The command line for these values, each shell-quoted."""
        return render_command(self.command, values)

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return source_problems(self.workspaces)

    async def __call__(self, request: AuthorRequest) -> dict[str, object]:
        """Run the agent once and return its diff as a candidate."""
        async with checkout_at(self.workspaces, request.unit.base_sha) as (manager, workspace):
            values = _fields(request, workspace)
            # Outside the workspace (never part of the diff), in a folder a sandbox may write.
            records = manager.folder / "records" / workspace.path.name
            await anyio.Path(records).mkdir(parents=True, exist_ok=True)
            record_file = records / "reduce.json"
            environment = {
                **os.environ,
                **(self.env or {}),
                **{f"MESH_{name.upper()}": value for name, value in values.items()},
                "MESH_REDUCE_RECORD": str(record_file),
            }
            try:
                result = await run_command(
                    self.render(values),
                    cwd=workspace.path,
                    timeout=self.timeout,
                    env=environment,
                    sandbox=self.sandbox,
                    writable=(records,),
                )
                record = await anyio.to_thread.run_sync(_read_record, record_file)
            finally:
                record_file.unlink(missing_ok=True)
            if not result.ok:
                reason = "timed out" if result.timed_out else f"exit code {result.exit_code}"
                # Named by its lane: a reducer's failure is the reducer's, not a coder's.
                why = f"{request.lane.value} command {reason}: {key_line(result.output)}"
                return rejected(request, workspace, why)
            if isinstance(record, str):
                return rejected(request, workspace, record)
            return await diff_candidate(
                request, workspace, notes=key_line(result.output) or None, reduce_record=record
            )


def _record_bytes(path: Path) -> bytes | str | None:
    """What a command wrote as its reduce record: bytes, None when absent, or why not."""
    try:
        # Never blocks (a FIFO), never follows a link: the command chose what is there.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"MESH_REDUCE_RECORD cannot be read: {exc.strerror}"
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return "MESH_REDUCE_RECORD is not a regular file"
        data = stream.read(_RECORD_LIMIT + 1)
    if len(data) > _RECORD_LIMIT:
        return f"MESH_REDUCE_RECORD is larger than {_RECORD_LIMIT} bytes"
    return data


def _read_record(path: Path) -> dict[str, object] | str | None:
    """The reduce record a command wrote: a mapping, None when absent, or why it is unusable."""
    data = _record_bytes(path)
    if not isinstance(data, bytes):
        return data
    try:
        record = json.loads(data.decode())
    except UnicodeDecodeError:
        return "MESH_REDUCE_RECORD is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"MESH_REDUCE_RECORD is not JSON: {exc}"
    return record if isinstance(record, dict) else "MESH_REDUCE_RECORD is not a JSON object"


Editor = Callable[[AuthorRequest, Path], "Awaitable[object] | object"]


class CallableCoder:
    """
    Lets a Python callable edit a scratch worktree: for agent frameworks.

    ``edit(request, worktree)`` may be sync (run in a worker thread) or async;
    whatever it changes under ``worktree`` becomes the candidate. An exception
    from it is a ``reject`` carrying the error.

    .. versionadded:: 0.1.0
    """

    def __init__(self, workspaces: WorkspaceSource, edit: Editor) -> None:
        self.workspaces = workspaces
        self.edit = edit

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return source_problems(self.workspaces)

    async def __call__(self, request: AuthorRequest) -> dict[str, object]:
        """Call the editor in a fresh worktree and diff the result."""
        async with checkout_at(self.workspaces, request.unit.base_sha) as (_, workspace):
            try:
                if inspect.iscoroutinefunction(self.edit):
                    await self.edit(request, workspace.path)
                else:
                    await invoke(functools.partial(self.edit, request), workspace.path)
            except Exception as exc:  # noqa: BLE001 - the editor's failure is the candidate's
                return rejected(request, workspace, f"{type(exc).__name__}: {exc}")
            return await diff_candidate(request, workspace)


def _apply_edits(root: Path, edits: FileEdits) -> None:
    for name, content in edits.items():
        target = root / name
        if content is None:
            # Looked at first: an exception caught in a worker thread upsets coverage.
            if os.path.lexists(target):
                target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)


class ScriptedCoder:
    """
    Writes scripted file contents: deterministic candidates for examples and tests.

    ``script`` maps a unit id to the files its candidate writes (path →
    content, ``None`` deletes), or is a callable taking the request and
    returning those files (so that lanes can differ). A unit missing from the
    mapping gets ``no_diff``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        workspaces: WorkspaceSource,
        script: Mapping[str, FileEdits] | Callable[[AuthorRequest], FileEdits],
    ) -> None:
        self.workspaces = workspaces
        self.script = script

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return source_problems(self.workspaces)

    async def __call__(self, request: AuthorRequest) -> dict[str, object]:
        """Write the scripted files in a fresh worktree and diff them."""
        edits = (
            self.script(request) if callable(self.script) else self.script.get(request.unit.id, {})
        )
        async with checkout_at(self.workspaces, request.unit.base_sha) as (_, workspace):
            await anyio.to_thread.run_sync(_apply_edits, workspace.path, edits)
            return await diff_candidate(request, workspace)
