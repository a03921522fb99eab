"""
pydantic-ai agents as coders and fixers, with file tools that cannot leave the worktree.

`PydanticAICoder` runs a `pydantic_ai.Agent` once per candidate in a fresh
worktree at the unit's base, with the unit's prompt and four file tools
(`worktree_toolset`): read and list anywhere inside the worktree, write and
delete only inside the unit's write scope. The tools are the agent's only hands,
so they are where confinement happens: every path is checked as mesh's scope gate
checks a patch (relative, no ``..``, never ``.git``), then walked one component at
a time from a descriptor of the worktree, never following a symlink. A refused
call is a failed tool result the model reads, not an error that ends the run.
The candidate is still mesh's own diff of the worktree, gated like any other.

`PydanticAIFixer` asks an agent for a typed verdict (`VerdictOutput` as the
run's ``output_type``) and checks it as strictly as `parse_verdict` reads a
text one.

pydantic-ai drives its runs with asyncio only. Under asyncio the agent runs on
the caller's loop; under any other backend (trio) every run goes to one asyncio
loop on a thread of its own, shared by all runs so that an agent's HTTP clients
always meet the same loop, and a cancelled call cancels its run there and waits
for it to end.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - pydantic-ai itself runs on asyncio only
import dataclasses
import errno
import importlib
import json
import os
import stat
import threading
from collections.abc import Callable, Collection, Coroutine, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar, cast

import anyio

from ..contracts._enums import SpecialPath
from ..contracts._errors import InvalidOutputSchema
from ..contracts._gate import path_problem
from ..contracts._records import WorkerResult
from ..contracts._scopes import in_scope
from ..engine._call_facts import note_call
from ..engine._roles import AdjudicationRequest, AuthorRequest
from ..engine._tracing import context_with_trace
from ..git._coders import diff_candidate, rejected
from ..git._workspaces import WorkspaceSource, checkout_at, source_problems
from ._cli import AgentFailed, AgentUnavailable
from ._prompt import Verdict, coder_prompt, fixer_prompt, parse_verdict, verdict_answer

if TYPE_CHECKING:
    from pydantic_ai import Agent, CancellationToken, FunctionToolset
    from pydantic_ai.agent import AgentRunResult
    from pydantic_ai.toolsets import AbstractToolset
    from pydantic_ai.usage import UsageLimits

__all__ = ["PydanticAICoder", "PydanticAIFixer", "VerdictOutput", "worktree_toolset"]

_T = TypeVar("_T")
_INSTALL: Final = "pip install 'mesh[pydantic-ai]'"
_NAME: Final = "pydantic-ai"
# What one tool call may move: a model's context is the real limit, the disk the next.
READ_LIMIT: Final = 256 * 1024
WRITE_LIMIT: Final = 1024 * 1024
LIST_LIMIT: Final = 2000
# Folders nest no deeper than this through the tools: a listing walks them one level at a
# time, and a tree past Python's recursion limit must never be the agent's to make.
DEPTH_LIMIT: Final = 64
_NOTES_LIMIT: Final = 4000
_DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted in the worktree must not hang the tool.
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
)
_CONTROL_FILES: Final = {
    ".gitattributes": SpecialPath.GITATTRIBUTES,
    ".gitmodules": SpecialPath.GITMODULES,
}


def _pydantic_ai() -> ModuleType:
    """The pydantic_ai package, or `AgentUnavailable` naming the extra that installs it."""
    try:
        return importlib.import_module("pydantic_ai")
    except ImportError:
        raise AgentUnavailable(
            "pydantic-ai is not installed", hint=f"install it: {_INSTALL}"
        ) from None


class _Refused(Exception):
    """A tool call mesh will not carry out; its message is what the model reads."""


def _components(path: str, *, allow_root: bool) -> list[str]:
    """The components of a tool's ``path`` argument, or `_Refused` saying what is wrong with it."""
    if allow_root and path.strip("/") in {"", "."}:
        return []
    shown = json.dumps(path)
    # A backslash is part of a name here, but the scope check reads it as a separator.
    if "\\" in path:
        raise _Refused(f"{shown}: a path uses '/' and has no backslash")
    problem = path_problem(path.removeprefix("./").removesuffix("/") if allow_root else path)
    if problem is not None:
        raise _Refused(f"{shown} {problem}")
    return [part for part in path.split("/") if part not in {"", "."}]


class _Files:
    """The worktree as the tools see it: reads inside it, writes inside the write scope."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        write_scope: Sequence[str] | None,
        allow_special: Collection[SpecialPath],
    ) -> None:
        self.root = os.path.realpath(root)
        self.write_scope = None if write_scope is None else tuple(write_scope)
        self.allow_special = frozenset(allow_special)
        self.refused: list[str] = []

    def _open_folder(self, parts: Sequence[str], *, create: bool = False) -> int:
        """A descriptor of the folder ``parts`` names, reached without following any symlink."""
        descriptor = os.open(self.root, _DIRECTORY_FLAGS)
        try:
            for index, part in enumerate(parts):
                try:
                    inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, dir_fd=descriptor)
                    inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)
                except NotADirectoryError:
                    # What O_DIRECTORY | O_NOFOLLOW says of a symlink, and of a file.
                    facts = os.stat(part, dir_fd=descriptor, follow_symlinks=False)
                    if stat.S_ISLNK(facts.st_mode):
                        where = "/".join(parts[: index + 1])
                        raise _Refused(f"{where} is a symbolic link: not followed") from None
                    raise
                os.close(descriptor)
                descriptor = inner
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def _writable(self, path: str) -> list[str]:
        parts = _components(path, allow_root=False)
        if len(parts) > DEPTH_LIMIT:
            raise _Refused(f"{path} is deeper than {DEPTH_LIMIT} folders: not changed")
        write_scope = self.write_scope or ()
        if not in_scope(path, write_scope):
            scope = ", ".join(write_scope)
            raise _Refused(f"{path} is outside the write scope ({scope}): not changed")
        special = _CONTROL_FILES.get(parts[-1].casefold())
        if special is not None and special not in self.allow_special:
            raise _Refused(f"{path}: this unit may not write {special.article}")
        return parts

    def read_file(self, path: str) -> str:
        parts = _components(path, allow_root=False)
        folder = self._open_folder(parts[:-1])
        try:
            try:
                descriptor = os.open(parts[-1], _READ_FLAGS, dir_fd=folder)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _Refused(f"{path} is a symbolic link: not followed") from None
                raise
        finally:
            os.close(folder)
        try:
            facts = os.fstat(descriptor)
            if stat.S_ISDIR(facts.st_mode):
                raise _Refused(f"{path} is a folder: use list_files")
            if not stat.S_ISREG(facts.st_mode):
                raise _Refused(f"{path} is not a regular file")
            with os.fdopen(descriptor, "rb", closefd=False) as stream:
                data = stream.read(READ_LIMIT + 1)
        finally:
            os.close(descriptor)
        if len(data) > READ_LIMIT:
            raise _Refused(f"{path} is larger than {READ_LIMIT} bytes: not read")
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise _Refused(f"{path} is not UTF-8 text: not read") from None

    def list_files(self, path: str) -> str:
        parts = _components(path, allow_root=True)
        lines: list[str] = []
        folder = self._open_folder(parts)
        try:
            complete = self._walk(folder, "/".join(parts), lines, len(parts))
        finally:
            os.close(folder)
        if not complete:
            lines.append(f"[... more entries: only the first {LIST_LIMIT} are listed]")
        return "\n".join(lines) or "(empty)"

    def _walk(self, folder: int, prefix: str, lines: list[str], depth: int) -> bool:
        """Add the files under ``folder`` to ``lines`` (False once the limit is reached)."""
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            # Never listed: git's own folder, and names no tool would accept.
            if path_problem(name) is not None:
                continue
            if len(lines) >= LIST_LIMIT:
                return False
            if entry.is_symlink():
                lines.append(f"{name} (symbolic link, not followed)")
            elif entry.is_dir(follow_symlinks=False) and depth >= DEPTH_LIMIT:
                lines.append(f"{name}/ (deeper than {DEPTH_LIMIT} folders, not listed)")
            elif entry.is_dir(follow_symlinks=False):
                inner = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=folder)
                try:
                    if not self._walk(inner, name, lines, depth + 1):
                        return False
                finally:
                    os.close(inner)
            else:
                lines.append(name)
        return True

    def write_file(self, path: str, content: str) -> str:
        parts = self._writable(path)
        try:
            data = content.encode()
        except UnicodeEncodeError:
            # A lone surrogate: JSON can spell one, UTF-8 cannot.
            raise _Refused(f"{path}: content is not valid Unicode text: not written") from None
        if len(data) > WRITE_LIMIT:
            raise _Refused(f"{path}: content is larger than {WRITE_LIMIT} bytes: not written")
        folder = self._open_folder(parts[:-1], create=True)
        try:
            self._check_replaceable(folder, parts[-1], path)
            # O_NOFOLLOW still: a symlink put there since the check fails the call (ELOOP).
            descriptor = os.open(parts[-1], _WRITE_FLAGS, 0o644, dir_fd=folder)
        finally:
            os.close(folder)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        return f"wrote {path} ({len(data)} bytes)"

    @staticmethod
    def _check_replaceable(folder: int, name: str, path: str) -> None:
        """Refuse to write over anything but a plain file of the worktree's own."""
        try:
            facts = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(facts.st_mode):
            raise _Refused(f"{path} is a symbolic link: not followed")
        if stat.S_ISDIR(facts.st_mode):
            raise _Refused(f"{path} is a folder")
        if not stat.S_ISREG(facts.st_mode):
            raise _Refused(f"{path} is not a regular file")
        # A hard link would carry the write to its other names, wherever they are.
        if facts.st_nlink > 1:
            raise _Refused(f"{path} has other hard links: not written")

    def delete_file(self, path: str) -> str:
        parts = self._writable(path)
        folder = self._open_folder(parts[:-1])
        try:
            facts = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
            if stat.S_ISDIR(facts.st_mode):
                raise _Refused(f"{path} is a folder: delete its files one by one")
            # unlink removes a symlink itself, never what it points at.
            os.unlink(parts[-1], dir_fd=folder)
        finally:
            os.close(folder)
        return f"deleted {path}"

    def call(self, action: Callable[..., str], *args: object) -> str:
        """Run one tool action; a refusal or an OS error becomes a failed tool result."""
        tool_failed = _pydantic_ai().ToolFailed
        try:
            return action(*args)
        except _Refused as exc:
            self.refused.append(str(exc))
            raise tool_failed(f"refused: {exc}") from None
        except OSError as exc:
            self.refused.append(f"{args[0]}: {exc.strerror}")
            raise tool_failed(f"{args[0]}: {exc.strerror}") from None


def _toolset(files: _Files) -> FunctionToolset[Any]:
    pydantic_ai = _pydantic_ai()
    toolset: FunctionToolset[Any] = pydantic_ai.FunctionToolset()

    # The docstrings are the tools' descriptions, as the model reads them.
    def read_file(path: str) -> str:
        """Read a UTF-8 text file of the worktree (path relative to its top, '/' separated)."""
        return files.call(files.read_file, path)

    def list_files(path: str = ".") -> str:
        """List the files under a folder of the worktree ('.' for the top), one path a line."""
        return files.call(files.list_files, path)

    toolset.add_function(read_file, takes_ctx=False)
    toolset.add_function(list_files, takes_ctx=False)
    if files.write_scope is None:
        return toolset

    def write_file(path: str, content: str) -> str:
        """Create or replace a text file (only paths inside the write scope), making folders."""
        return files.call(files.write_file, path, content)

    def delete_file(path: str) -> str:
        """Delete a file (only paths inside the write scope)."""
        return files.call(files.delete_file, path)

    toolset.add_function(write_file, takes_ctx=False)
    toolset.add_function(delete_file, takes_ctx=False)
    return toolset


def worktree_toolset(
    root: str | os.PathLike[str],
    *,
    write_scope: Sequence[str] | None = None,
    allow_special: Collection[SpecialPath] = (),
) -> FunctionToolset[Any]:
    """
    File tools for a pydantic-ai agent, confined to the folder ``root``.

    ``read_file(path)`` and ``list_files(path)`` read anywhere inside
    ``root``; with a ``write_scope`` (a unit's roots and globs),
    ``write_file(path, content)`` and ``delete_file(path)`` change files
    inside it only (``.gitattributes`` and ``.gitmodules`` only where
    ``allow_special`` lists them). A path is relative and ``/`` separated;
    one that is absolute, climbs with ``..``, holds a control character or a
    backslash, or names ``.git`` (in any case or spelling git itself
    refuses) is refused, and so is any symlink on the way (never followed),
    a device, FIFO or other non-regular file, a file with other hard links
    (for writes), a file over 256 KiB (reads) or content over 1 MiB
    (writes). A refused call is a failed tool result the model reads, and
    the run goes on.

    Raises:
        AgentUnavailable: pydantic-ai is not installed.

    .. versionadded:: 0.1.0
    """
    return _toolset(_Files(root, write_scope, allow_special))


def _shorten(text: str) -> str | None:
    text = text.strip()
    return (text[: _NOTES_LIMIT - 1] + "…" if len(text) > _NOTES_LIMIT else text) or None


def _model_name(agent: Agent[Any, Any]) -> str | None:
    model = agent.model
    return model if model is None or isinstance(model, str) else model.model_name


def _usage_facts(result: AgentRunResult[Any]) -> dict[str, object]:
    usage = result.usage
    return {
        "turns": usage.requests,
        "tool_calls": usage.tool_calls,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }


_LOOP_LOCK: Final = threading.Lock()
_loops: list[asyncio.AbstractEventLoop] = []


def _agent_loop() -> asyncio.AbstractEventLoop:
    """The asyncio loop that runs agents for callers on other backends, started once."""
    with _LOOP_LOCK:
        if not _loops:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mesh-pydantic-ai", daemon=True).start()
            _loops.append(loop)
        return _loops[0]


async def _drive(run: Callable[[CancellationToken | None], Coroutine[Any, Any, _T]]) -> _T:
    """Await ``run`` on this asyncio loop, or, under another backend, on mesh's agent loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return await _on_agent_loop(run)
    return await run(None)


async def _on_agent_loop(run: Callable[[CancellationToken | None], Coroutine[Any, Any, _T]]) -> _T:
    token: CancellationToken = _pydantic_ai().CancellationToken()
    # In an empty context: this task's own says "trio" to anyio and sniffio, which would
    # send pydantic-ai's anyio calls on that loop to the wrong backend. The trace goes along.
    future = context_with_trace().run(asyncio.run_coroutine_threadsafe, run(token), _agent_loop())
    outcome: list[_T] = []
    failure: list[Exception] = []

    async def cancel_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            # Ends the run on its loop; the wait below then sees it finish.
            token.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(cancel_when_cancelled)
        try:
            # Not abandoned on cancellation: the run is stopped, then waited for.
            outcome.append(await anyio.to_thread.run_sync(future.result))
        except Exception as exc:  # noqa: BLE001 - raised again outside the task group
            failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0]


class PydanticAICoder:
    """
    A pydantic-ai agent as a coder (or reducer): its edits with mesh's file tools are the candidate.

    For each request the agent runs once in a fresh worktree at the unit's
    base, with `coder_prompt` as the user prompt and the file tools of
    `worktree_toolset` added for the run (reads anywhere in the worktree,
    writes only in the unit's write scope). The candidate is mesh's own diff
    of the worktree; the run's final output becomes its notes, and its
    requests (``turns``), tool calls, tokens and refused tool calls the
    call's ledger facts. An exception from the run (a model error, a usage
    limit, ``timeout`` seconds passing) is a ``reject`` with the reason.

    ``deps`` and ``usage_limits`` are passed to every run as they are.

    Example::

        agent = pydantic_ai.Agent("anthropic:claude-sonnet-4-5")
        mesh.run(plan, repo=".", out="out", roles=mesh.Roles(coder=PydanticAICoder(".", agent)))

    Raises:
        AgentUnavailable: pydantic-ai is not installed.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        workspaces: WorkspaceSource,
        agent: Agent[Any, Any],
        *,
        timeout: float = 1800.0,
        usage_limits: UsageLimits | None = None,
        deps: object = None,
    ) -> None:
        _pydantic_ai()
        self.workspaces = workspaces
        self.agent = agent
        self.timeout = timeout
        self.usage_limits = usage_limits
        self.deps = deps

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return source_problems(self.workspaces)

    async def __call__(self, request: AuthorRequest) -> dict[str, object]:
        """Run the agent once on the unit and return mesh's diff of its edits."""
        async with checkout_at(self.workspaces, request.unit.base_sha) as (_, workspace):
            files = _Files(workspace.path, request.unit.write_scope, request.unit.allow_special)
            toolsets = [_toolset(files)]
            prompt = coder_prompt(request)

            def run(token: CancellationToken | None) -> Coroutine[Any, Any, AgentRunResult[Any]]:
                return self.agent.run(
                    prompt,
                    toolsets=toolsets,
                    deps=self.deps,
                    usage_limits=self.usage_limits,
                    timeout=self.timeout,
                    cancellation_token=token,
                )

            facts: dict[str, object] = {"agent": _NAME, "model": _model_name(self.agent)}
            try:
                result = await _drive(run)
            except Exception as exc:  # noqa: BLE001 - the agent's failure is the candidate's
                why = f"{_NAME} run failed: {type(exc).__name__}: {exc}"
                note_call(**facts, refused_tool_calls=len(files.refused), error=why)
                return rejected(request, workspace, why)
            final = str(result.output)
            note_call(
                **facts,
                **_usage_facts(result),
                refused_tool_calls=len(files.refused),
                final_message=final,
            )
            return await diff_candidate(request, workspace, notes=_shorten(final))


# A stdlib dataclass, not attrs: pydantic (through pydantic-ai) builds the
# output schema the model answers to, and validates the answer, from it.
@dataclasses.dataclass(frozen=True, kw_only=True)
class VerdictOutput:
    """
    A fixer's verdict as a pydantic-ai run's typed output.

    `PydanticAIFixer` sets it as the run's ``output_type``: the model answers
    by calling the output tool with these fields, and an answer breaking the
    rules of `parse_verdict` (a ``select`` without a candidate, a ``rework``
    or ``blocked_safety`` without reasons or naming a candidate, unknown
    keys) goes back to the model to correct.

    .. versionadded:: 0.1.0
    """

    __pydantic_config__: ClassVar[dict[str, object]] = {"extra": "forbid"}

    verdict: Literal["select", "rework", "blocked_safety"]
    """``select`` a proven candidate, ask for ``rework``, or stop the unit (``blocked_safety``)."""
    candidate: str | None = None
    """The selected candidate's id (``select`` only)."""
    reasons: tuple[str, ...] = ()
    """Why (required for ``rework`` and ``blocked_safety``)."""

    def __post_init__(self) -> None:
        try:
            self.to_verdict()
        except InvalidOutputSchema as exc:
            # A ValueError is what pydantic turns into a validation error for the model.
            raise ValueError("; ".join(exc.problems)) from None

    def to_verdict(self) -> Verdict:
        """
        The verdict, checked by `parse_verdict`'s rules.

        Raises:
            mesh.InvalidOutputSchema: It breaks them.
        """
        document = {
            "verdict": self.verdict,
            "candidate": self.candidate,
            "reasons": list(self.reasons),
        }
        return parse_verdict(json.dumps(document))


class PydanticAIFixer:
    """
    A pydantic-ai agent as a fixer: a typed verdict on the proven candidates.

    The agent gets `fixer_prompt` (the proven candidates' patches and proof
    evidence) and answers with a `VerdictOutput` (the run's ``output_type``):
    select a proven candidate, ask for rework, or block the unit for safety.
    With ``workspaces`` it also gets the read-only tools of
    `worktree_toolset` on a worktree at the unit's base, to read the code
    around the patches. Selecting a candidate that was not proven, or an
    answer the model could not get right within its output retries, is this
    fixer's ``invalid_output_schema``; any other failure of the run
    (``timeout`` seconds passing, a model error) is this fixer's error
    (`AgentFailed`). Neither is ever taken as approval.

    Raises:
        AgentUnavailable: pydantic-ai is not installed.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        agent: Agent[Any, Any],
        *,
        workspaces: WorkspaceSource | None = None,
        timeout: float = 900.0,
        usage_limits: UsageLimits | None = None,
        deps: object = None,
    ) -> None:
        _pydantic_ai()
        self.agent = agent
        self.workspaces = workspaces
        self.timeout = timeout
        self.usage_limits = usage_limits
        self.deps = deps

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts (an unopened `WorkspaceManager`)."""
        return [] if self.workspaces is None else source_problems(self.workspaces)

    async def __call__(self, request: AdjudicationRequest) -> WorkerResult:
        """Ask the agent for its verdict on the proven candidates."""
        if self.workspaces is None:
            output = await self._verdict(request, [])
        else:
            async with checkout_at(self.workspaces, request.unit.base_sha) as (_, workspace):
                output = await self._verdict(request, [_toolset(_Files(workspace.path, None, ()))])
        return verdict_answer(request, output.to_verdict())

    async def _verdict(
        self, request: AdjudicationRequest, toolsets: list[AbstractToolset[Any]]
    ) -> VerdictOutput:
        prompt = fixer_prompt(request)

        def run(token: CancellationToken | None) -> Coroutine[Any, Any, AgentRunResult[Any]]:
            return self.agent.run(
                prompt,
                output_type=VerdictOutput,
                toolsets=toolsets,
                deps=self.deps,
                usage_limits=self.usage_limits,
                timeout=self.timeout,
                cancellation_token=token,
            )

        facts: dict[str, object] = {"agent": _NAME, "model": _model_name(self.agent)}
        unusable = _pydantic_ai().UnexpectedModelBehavior
        try:
            result = await _drive(run)
        except unusable as exc:
            note_call(**facts, error=str(exc))
            raise InvalidOutputSchema([f"{_NAME} verdict: {exc}"]) from None
        except Exception as exc:
            why = f"{_NAME} run failed: {type(exc).__name__}: {exc}"
            note_call(**facts, error=why)
            raise AgentFailed(why) from exc
        # The run's output_type: pydantic-ai validated the answer into one.
        output = cast("VerdictOutput", result.output)
        note_call(**facts, **_usage_facts(result), final_message=repr(output))
        return output
