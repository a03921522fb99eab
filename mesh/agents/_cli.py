"""
Agent command lines as coders and fixers: one runner, one small description per agent.

An `AgentCLI` says how to start one agent program non-interactively (its argv, its
environment, where its state lives) and how to read what it printed. `AgentCoder`
runs it in a fresh worktree at the unit's base with the unit's prompt on standard
input, contained (timeout and cancellation end its whole process tree, see
`run_command`), and turns what it changed into the candidate by mesh's own git
diff: the agent's account of its work is evidence for the ledger, never the patch.
`AgentFixer` runs it read-only on the same checkout and reads a strict JSON verdict
from its final message.
"""

from __future__ import annotations

import abc
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Final

import attrs

from ..contracts._enums import FailureCode
from ..contracts._errors import InvalidOutputSchema, MeshError
from ..contracts._records import WorkerResult
from ..engine._call_facts import note_call
from ..engine._roles import AdjudicationRequest, AuthorRequest
from ..git._coders import diff_candidate, rejected
from ..git._workspaces import Workspace, WorkspaceSource, checkout_at, source_problems
from ..host._process import CommandResult, key_line, run_command
from ..host._sandbox import Sandbox
from ._prompt import coder_prompt, fixer_prompt, parse_verdict, verdict_answer

__all__ = ["AgentCLI", "AgentCoder", "AgentFixer", "AgentReport", "AgentUnavailable"]

# The agent's final message is the candidate's notes: evidence, kept short.
_NOTES_LIMIT: Final = 4000
_OUTPUT_LIMIT: Final = 4 * 1024 * 1024


class AgentUnavailable(MeshError, RuntimeError):
    """
    An agent program is not installed (or not where it was said to be).

    The message names the package that provides it.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE


@attrs.frozen(kw_only=True)
class AgentReport:
    """
    What an agent said about its own run, read from its machine-readable output.

    Every field is None where the agent does not report it. ``error`` is set
    when the agent itself reported a failure (a model reply it could not use,
    an API error): the candidate is then rejected with it.

    .. versionadded:: 0.1.0
    """

    final_message: str | None = None
    turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    session: str | None = None
    """The agent's own id for the run (a thread or session id)."""
    error: str | None = None

    def facts(self) -> dict[str, object]:
        """The reported fields, for the call's ledger event (`mesh.note_call`)."""
        return {
            name: value
            for name, value in attrs.asdict(self).items()
            if value is not None and name != "final_message"
        }


class AgentCLI(abc.ABC):
    """
    How to run one agent program non-interactively, and how to read its output.

    Subclasses describe one agent (`CodexCLI`, `ClaudeCodeCLI`, `AiderCLI`);
    an author can describe another the same way. The prompt goes to the
    program on standard input (it may be longer than a command line allows).

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str]
    """Short name, as in ``mesh run --agent NAME``."""
    program: ClassVar[str]
    """The executable looked for on PATH."""
    install: ClassVar[str]
    """How to install the program, for the error when it is missing."""
    edits_under_git: ClassVar[bool] = True
    """Whether it edits files in a worktree under a ``.git`` folder (mesh's default place
    for workspaces); a run with one that does not puts its workspaces elsewhere."""

    def __init__(self, *, executable: str | os.PathLike[str] | None = None) -> None:
        self.executable = None if executable is None else os.fspath(executable)

    def find(self) -> str:
        """
        The program's path.

        Raises:
            AgentUnavailable: It is not installed; the message says how to install it.
        """
        wanted = self.executable or self.program
        found = shutil.which(wanted)
        if found is None:
            where = f"at {wanted}" if self.executable else "on PATH"
            raise AgentUnavailable(
                f"{self.name}: {self.program} is not {where}", hint=f"install it: {self.install}"
            )
        return found

    @abc.abstractmethod
    def command(self, program: str, *, worktree: Path, read_only: bool) -> list[str]:
        """The argv that runs the agent once in ``worktree``, reading its prompt from stdin."""

    def unit_command(
        self, program: str, *, worktree: Path, read_only: bool, scope: Sequence[str]
    ) -> list[str]:
        """
        The argv for one unit whose write scope is ``scope``; by default `command`.

        Override it for an agent that must be told which files it may edit
        (Aider edits only the files named on its command line).
        """
        del scope  # most agents find their files themselves
        return self.command(program, worktree=worktree, read_only=read_only)

    def environment(self, base: Mapping[str, str], *, read_only: bool) -> dict[str, str]:  # noqa: ARG002 - for subclasses
        """The agent's environment, given mesh's (override to point it at its state)."""
        return dict(base)

    def writable(self) -> Sequence[str | os.PathLike[str]]:
        """Folders besides the worktree the agent writes (its state), for a sandbox."""
        return ()

    @abc.abstractmethod
    def read_output(self, result: CommandResult) -> AgentReport:
        """What the agent reported, from its standard output (``result.output``)."""


async def _run_agent(
    agent: AgentCLI,
    workspace: Workspace,
    prompt: str,
    *,
    read_only: bool,
    timeout: float,  # noqa: ASYNC109 - the agent's own limit; the call returns its result
    env: Mapping[str, str] | None,
    sandbox: Sandbox | None,
    scope: Sequence[str] = (),
) -> tuple[CommandResult, AgentReport]:
    program = agent.find()
    environment = agent.environment({**os.environ, **(env or {})}, read_only=read_only)
    result = await run_command(
        agent.unit_command(program, worktree=workspace.path, read_only=read_only, scope=scope),
        cwd=workspace.path,
        timeout=timeout,
        env=environment,
        stdin=prompt.encode(),
        merge_stderr=False,
        output_limit=_OUTPUT_LIMIT,
        sandbox=sandbox,
        writable=agent.writable(),
    )
    report = agent.read_output(result)
    note_call(
        agent=agent.name,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        seconds=round(result.seconds, 3),
        **report.facts(),
        final_message=report.final_message,
    )
    return result, report


def _failure(agent: AgentCLI, result: CommandResult, report: AgentReport) -> str | None:
    """Why the agent's run gives no candidate, or None when it finished cleanly."""
    if result.timed_out:
        return f"{agent.name} timed out after {result.seconds:.0f}s"
    if report.error is not None:
        return f"{agent.name}: {report.error}"
    if result.exit_code != 0:
        said = key_line(result.errors) or key_line(result.output)
        return f"{agent.name} exited with code {result.exit_code}: {said}"
    return None


def _shorten(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    text = text.strip()
    return text if len(text) <= _NOTES_LIMIT else text[: _NOTES_LIMIT - 1] + "…"


class _AgentRole:
    """An agent program playing a role: where it works, and how it is run."""

    def __init__(
        self,
        workspaces: WorkspaceSource,
        agent: AgentCLI,
        *,
        timeout: float = 1800.0,
        env: Mapping[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.agent = agent
        self.timeout = timeout
        self.env = env
        self.sandbox = sandbox

    async def _run_once(
        self, workspace: Workspace, prompt: str, scope: Sequence[str], *, read_only: bool
    ) -> tuple[AgentReport, str | None]:
        """The agent's report of one run, and why it gives no answer (None: it does)."""
        result, report = await _run_agent(
            self.agent,
            workspace,
            prompt,
            read_only=read_only,
            scope=scope,
            timeout=self.timeout,
            env=self.env,
            sandbox=self.sandbox,
        )
        return report, _failure(self.agent, result, report)

    def preflight(self) -> list[str]:
        """Problems to fix before a run starts: the agent missing, an unopened manager."""
        problems = source_problems(self.workspaces)
        try:
            self.agent.find()
        except AgentUnavailable as exc:
            problems.append(f"{exc.message} ({exc.hint})")
        return problems


class AgentCoder(_AgentRole):
    """
    An agent program as a coder (or reducer): its edits in a fresh worktree become the candidate.

    The agent gets the unit's prompt (objective, write scope, constraints,
    invariants, proof command) on standard input and runs in a worktree at
    the unit's base, under ``timeout`` seconds; nothing it starts outlives
    the call. Its final message becomes the candidate's notes, and its turns,
    tokens and cost (where it reports them) the call's ledger facts. The
    candidate is mesh's own diff of the worktree, checked against the write
    scope like any other; a timeout, a non-zero exit or a failure the agent
    reports is a ``reject`` with the reason. With a ``sandbox`` it also runs
    in bubblewrap (only the worktree and its own state writable).

    .. versionadded:: 0.1.0
    """

    @property
    def workspaces_outside_git(self) -> bool:
        """Whether a run on a repository must put its workspaces outside ``.git`` for the agent."""
        return not self.agent.edits_under_git

    async def __call__(self, request: AuthorRequest) -> dict[str, object]:
        """Run the agent once on the unit and return mesh's diff of its edits."""
        async with checkout_at(self.workspaces, request.unit.base_sha) as (_, workspace):
            report, failure = await self._run_once(
                workspace, coder_prompt(request), request.unit.write_scope, read_only=False
            )
            if failure is not None:
                return rejected(request, workspace, failure)
            return await diff_candidate(request, workspace, notes=_shorten(report.final_message))


class AgentFixer(_AgentRole):
    """
    An agent program as a fixer: it reviews the proven candidates read-only and gives a verdict.

    The agent runs in its read-only mode in a worktree at the unit's base
    (to read the code around the patches), with the candidates' patches and
    proof evidence in its prompt, and must end its final message with one
    JSON verdict (see `parse_verdict`): select a proven candidate, ask for
    rework, or block the unit for safety. Quorum rules are the engine's, as
    for any fixer. An answer that cannot be read, or that selects a
    candidate that was not proven, is this fixer's ``invalid_output_schema``;
    an agent that edits files anyway, times out or fails is this fixer's
    error. Neither is ever taken as approval.

    .. versionadded:: 0.1.0
    """

    async def __call__(self, request: AdjudicationRequest) -> WorkerResult:
        """Ask the agent for its verdict on the proven candidates."""
        async with checkout_at(self.workspaces, request.unit.base_sha) as (_, workspace):
            report, failure = await self._run_once(
                workspace, fixer_prompt(request), request.unit.write_scope, read_only=True
            )
            if failure is not None:
                raise AgentFailed(failure)
            # A reviewer that writes is not read-only, whatever it then says.
            git = workspace.git()
            await git("add", "--all")
            changed = await git("diff", "--cached", "--name-only", "--no-renames", workspace.sha)
            # The checkout had no ignored files (a workspace is cleaned before it is used).
            changed += await git("ls-files", "--others", "--ignored", "--exclude-standard")
        if changed.strip():
            first = changed.split()[0]
            raise AgentFailed(f"{self.agent.name} changed files while reviewing ({first}, ...)")
        try:
            return verdict_answer(request, parse_verdict(report.final_message or ""))
        except InvalidOutputSchema as exc:
            raise InvalidOutputSchema(
                [f"{self.agent.name} verdict {problem}" for problem in exc.problems]
            ) from None


class AgentFailed(MeshError, RuntimeError):
    """
    An agent run gave no answer: it timed out, failed, or broke its read-only mode.

    .. versionadded:: 0.1.0
    """

    default_code = FailureCode.TOOLING_UNAVAILABLE
