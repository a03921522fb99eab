"""
The tools of ``mesh mcp``: each a typed argument model (its JSON schema) and what it does.

Every tool is a command of the ``mesh`` command line with the same options,
spelt as its `mesh.commands` keywords, and the same checks: the values go to
the same functions. An argument model is strict (JSON types as declared, no
argument it does not know), so a misspelt option is an error naming the
closest one rather than an option silently left at its default. Every path
goes through `Root` first.
"""

from __future__ import annotations

import abc
import functools
import math
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import anyio
import attrs
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from .. import commands
from ..agents._registry import AGENTS
from ..cli._run_command import (
    Authors,
    RunReport,
    RunSetup,
    Start,
    _Refusals,
    _report,
    _sandbox,
    report,
    resumed,
    status,
    stored_ledger,
)
from ..contracts._convert import loads_json
from ..contracts._enums import Lane
from ..contracts._errors import InputError, OptionError, PathCollisionError
from ..contracts._events import LedgerEvent
from ..contracts._files import read_text
from ..contracts._text import one_line
from ..host._owner import owning
from ..store._store import STORE_FILE
from ._paths import Root

if TYPE_CHECKING:
    from anyio.abc import ObjectReceiveStream

__all__ = ["TOOLS", "Arguments", "Call", "Result", "RunProgress", "ToolSpec"]

Result: TypeAlias = dict[str, object] | str
"""What a tool returns: a JSON document, or text (a run's prose ledger)."""

Progress: TypeAlias = Callable[[float, float | None, str | None], Awaitable[None]]
"""Sends one progress notification: done, total (if known), a message."""

_RUNS_HELP: Final = "where run ids are looked up (default mesh-runs)"
_RUN_HELP: Final = "a stored run: its folder, its run.sqlite, or its id under runs"


@attrs.frozen(kw_only=True)
class Call:
    """
    What a tool call may use besides its arguments: the root and a progress channel.

    .. versionadded:: 0.1.0
    """

    root: Root
    progress: Progress


class Arguments(BaseModel, abc.ABC):
    """The arguments of one tool; the model's docstring is the tool's description."""

    # Strict: JSON types as declared (no "3" for 3, no 1 for true); unknown names are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @abc.abstractmethod
    async def execute(self, call: Call) -> Result:
        """Do what the tool does."""


async def _in_thread(function: Callable[..., Result], **options: object) -> Result:
    # The commands read and write files: off the event loop, so a run in progress goes on.
    return await anyio.to_thread.run_sync(functools.partial(function, **options))


class _BudgetInputs(Arguments, abc.ABC):
    remaining_five_hour: float = Field(
        description="percent of the 5-hour budget left (clamped to 0..100)"
    )
    remaining_weekly: float = Field(
        description="percent of the weekly budget left (clamped to 0..100)"
    )
    max_threads: int = Field(12, description="most units active at once (0 counts as 1)")
    previous_triplet_width: int = Field(
        3, description="candidate width of the previous wave (clamped to 1..3)"
    )
    prior_wave_instability: bool = Field(
        default=False, description="whether the previous wave was unstable"
    )
    consecutive_unstable_waves: int = Field(0, description="unstable waves in a row")
    consecutive_clean_waves: int = Field(0, description="clean waves in a row")


class BudgetArguments(_BudgetInputs):
    """
    The concurrency authority (`mesh budget`): most active units and candidate width.

    From the remaining 5-hour and weekly budget, and how the last waves went.
    """

    linear_start_threshold: float = Field(
        33.0, description="percent at and below which the linear clamp starts"
    )
    single_agent_threshold: float = Field(
        10.0, description="percent at and below which one unit runs at a time"
    )
    scaleout_threshold: float = Field(25.0, description="percent above which scale-out is allowed")

    async def execute(self, call: Call) -> Result:  # noqa: ARG002 - reads no file
        return await _in_thread(commands.budget, **self.model_dump())


class ReplayArguments(_BudgetInputs):
    """Preflight: how ready units would split into waves under this budget (`mesh replay`)."""

    ready_units: int = Field(
        ge=0, le=1_000_000, description="units ready to run (at most a million)"
    )

    async def execute(self, call: Call) -> Result:  # noqa: ARG002 - reads no file
        return await _in_thread(commands.replay, **self.model_dump())


class PlanSyncArguments(Arguments):
    """Count a plan file's steps by status (`mesh plan_sync`)."""

    input_json: str = Field(
        description="update_plan JSON file: an array of steps, or {plan: [...]}"
    )

    async def execute(self, call: Call) -> Result:
        return await _in_thread(
            commands.plan_sync, input_json=call.root.path(self.input_json, name="input_json")
        )


class SliceArguments(Arguments):
    """Slice a plan file into units; optionally also write them to output_json (`mesh slice`)."""

    input_json: str = Field(description="update_plan JSON file")
    max_slices: int | None = Field(None, description="cap on the number of units (default: none)")
    output_json: str | None = Field(
        None, description="also write the units here (folders created; not the input)"
    )

    async def execute(self, call: Call) -> Result:
        output = self.output_json
        return await _in_thread(
            commands.slice,
            input_json=call.root.path(self.input_json, name="input_json"),
            max_slices=self.max_slices,
            output_json=None if output is None else call.root.output(output, name="output_json"),
        )


class WaveArguments(Arguments):
    """Write the next ready batch of candidate rows as a CSV file (`mesh wave`)."""

    units_json: str = Field(description="units JSON (the output of slice)")
    csv_path: str = Field(description="where to write the batch CSV")
    max_active: int = Field(1, description="most units in the wave")
    lane: str = Field(
        Lane.CODER.value,
        description="lane of the rows",
        json_schema_extra={"enum": [lane.value for lane in Lane]},
    )
    triplet_width: int = Field(3, description="rows per unit, 1..3")

    async def execute(self, call: Call) -> Result:
        return await _in_thread(
            commands.wave,
            units_json=call.root.path(self.units_json, name="units_json"),
            csv_path=call.root.output(self.csv_path, name="csv_path"),
            max_active=self.max_active,
            lane=self.lane,
            triplet_width=self.triplet_width,
        )


class RunCsvArguments(Arguments):
    """Validate a batch CSV and write its output CSV of queued candidates (`mesh run_csv`)."""

    csv_path: str = Field(description="batch CSV to validate")
    output_csv_path: str = Field(description="output CSV to write (not an input)")
    max_concurrency: int | None = Field(
        None, description="workers available (default: the row count)"
    )
    runnable_units: int | None = Field(
        None, description="units runnable now (default: the row count)"
    )
    floor_threshold: int = Field(3, description="concurrency floor")
    fail_on_floor: bool = Field(
        default=False, description="fail, writing nothing, when the floor gate fails"
    )
    deps_csv: str | None = Field(
        None, description="deps CSV (id,depends_on,interactive_lead) to validate"
    )

    async def execute(self, call: Call) -> Result:
        deps = self.deps_csv
        return await _in_thread(
            commands.run_csv,
            csv_path=call.root.path(self.csv_path, name="csv_path"),
            output_csv_path=call.root.output(self.output_csv_path, name="output_csv_path"),
            max_concurrency=self.max_concurrency,
            runnable_units=self.runnable_units,
            floor_threshold=self.floor_threshold,
            fail_on_floor=self.fail_on_floor,
            deps_csv=None if deps is None else call.root.path(deps, name="deps_csv"),
        )


def _stored_run(root: Root, run: str, runs: str) -> tuple[Path, Path]:
    """
    The store file of the run ``run`` (its folder, its store, or its id under ``runs``).

    Returns the store and the runs folder, both inside the root.
    """
    folder = root.path(runs, name="runs")
    looked = (root.path(run, name="run"), root.path(str(folder / run), name="run"))
    for candidate in looked:
        if candidate.is_dir():
            return root.path(str(candidate / STORE_FILE), name="run"), folder
        if candidate.is_file():
            return candidate, folder
    raise InputError(f"no run {run!r} (looked for {looked[0]} and {looked[1]})")


class LedgerArguments(Arguments):
    """
    A ledger (`mesh ledger`).

    With input_json: that ledger payload filtered to the events that occurred
    (a JSON document). With run: the stored run's prose Orchestration Ledger
    (text). Give one of them.
    """

    input_json: str | None = Field(None, description="a JSON object of ledger fields")
    run: str | None = Field(None, description=_RUN_HELP)
    runs: str = Field("mesh-runs", description=_RUNS_HELP)

    async def execute(self, call: Call) -> Result:
        if (self.run is None) == (self.input_json is None):
            raise OptionError("InvalidOptionValue", "give run or input_json, one of them")
        if self.run is not None:
            store, runs = _stored_run(call.root, self.run, self.runs)
            return await _in_thread(stored_ledger, run=store, runs=runs)
        given = call.root.path(str(self.input_json), name="input_json")
        return await _in_thread(commands.ledger, input_json=given)


class StatusArguments(Arguments):
    """A stored run's units by state (`mesh status`): completed, failed, blocked, ..."""

    run: str = Field(description=_RUN_HELP)
    runs: str = Field("mesh-runs", description=_RUNS_HELP)

    async def execute(self, call: Call) -> Result:
        store, runs = _stored_run(call.root, self.run, self.runs)
        return await _in_thread(status, run=store, runs=runs)


class ReportArguments(Arguments):
    """A stored run as one self-contained HTML page (`mesh report`): timeline, ledger."""

    run: str = Field(description=_RUN_HELP)
    output: str = Field(description="where to write the page")
    runs: str = Field("mesh-runs", description=_RUNS_HELP)

    async def execute(self, call: Call) -> Result:
        store, runs = _stored_run(call.root, self.run, self.runs)
        output = call.root.output(self.output, name="output")
        return await _in_thread(report, run=store, output=output, runs=runs)


@attrs.define
class RunProgress:
    """
    A run's progress from its ledger: units finished (or blocked) out of all.

    .. versionadded:: 0.1.0
    """

    total: int | None = None
    done: int = 0

    def step(self, event: LedgerEvent) -> tuple[float, float | None, str] | None:
        """The progress this event makes, if any: done, total, and what happened."""
        if event.event == "run_started":
            units = event.data.get("units")
            self.total = units if isinstance(units, int) else None
            return self.done, self.total, "run started"
        if event.event == "run_resumed":
            units, finished = event.data.get("units"), event.data.get("finished")
            self.total = units if isinstance(units, int) else None
            self.done = finished if isinstance(finished, int) else 0
            return self.done, self.total, "run resumed"
        if event.event in {"unit_finished", "unit_blocked"}:
            self.done += 1
            # Unit ids are plan text: one line, whatever they hold.
            what = event.event.removeprefix("unit_")
            return self.done, self.total, f"{one_line(event.unit_id or '?')} {what}"
        return None


async def _forward(
    steps: ObjectReceiveStream[tuple[float, float | None, str]], progress: Progress
) -> None:
    async with steps:
        async for done, total, message in steps:
            await progress(done, total, message)


async def _watched(call: Call, start: Start) -> RunReport:
    """
    Run ``start`` (a run or a resume given its event callback), sending progress as it goes.

    The ledger's events are seen in the scheduler's task, where nothing may
    wait: each step goes into a queue, sent on as a progress notification by a
    task of its own. The report is the one ``mesh run`` prints.
    """
    refusals = _Refusals()
    progress = RunProgress()
    send, receive = anyio.create_memory_object_stream[tuple[float, float | None, str]](math.inf)

    def follow(event: LedgerEvent) -> None:
        refusals.on_event(event)
        if (step := progress.step(event)) is not None:
            send.send_nowait(step)

    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_forward, receive, call.progress)
        with send:
            try:
                finished = await start(follow)
            except Exception as error:  # noqa: BLE001 - raised below, outside the task group
                # Raised in the group, it would come out wrapped in an exception group.
                failure = error
    if failure is not None:
        raise failure
    return _report(finished, refusals)


def _run_document(command: str, done: RunReport) -> dict[str, object]:
    finished = done.run
    return {
        "command": command,
        "run_id": finished.result.run_id,
        "exit_code": done.exit_code,
        "out": str(finished.out),
        "ledger_path": str(finished.ledger_path),
        "plan_path": str(finished.plan_path),
        "patches": str(finished.patches),
        "units": [
            {
                "id": outcome.unit_id,
                "state": outcome.state,
                "failure_code": None
                if outcome.failure_code is None
                else outcome.failure_code.value,
                "evidence": outcome.evidence,
            }
            for outcome in finished.result.outcomes
        ],
        "report": done.text,
    }


_AGENT_SCHEMA: Final[dict[str, JsonValue]] = {"enum": [*AGENTS, None]}


class RunArguments(Arguments):
    """
    Run a plan on a git repository (`mesh run`): candidates in worktrees, proofs, quorum, delivery.

    The plan is a file (plan) or the plan itself (plan_document): an
    update_plan payload. Coders are a command template (coder_command) or an
    agent CLI (agent). The call returns when the run ends, with progress
    notifications (units finished out of all) on the way; a cancelled call
    stops the run, which resume continues. Its folder (out) keeps the ledger,
    the plan state, the patches and the run store.
    """

    plan: str | None = Field(None, description="update_plan JSON file (or plan_document)")
    plan_document: dict[str, Any] | list[Any] | None = Field(
        None, description="the plan itself: an update_plan payload (or plan)"
    )
    repo: str = Field(".", description="the git repository")
    coder_command: str | None = Field(
        None,
        description="command run in a scratch worktree per candidate; {objective}, {unit_id}, "
        "{write_scope}, ... are filled in, shell-quoted (this or agent)",
    )
    agent: str | None = Field(
        None,
        description="an installed agent CLI as the coders (this or coder_command)",
        json_schema_extra=_AGENT_SCHEMA,
    )
    fixer_agent: str | None = Field(
        None,
        description="an agent CLI, read-only, judges the proven candidates (default: mechanical)",
        json_schema_extra=_AGENT_SCHEMA,
    )
    agent_model: str | None = Field(None, description="the model agent and fixer_agent use")
    budget_from_agent: bool = Field(
        default=False,
        description="read the 5-hour and weekly budget from the agent's own rate-limit account",
    )
    reducer_command: str | None = Field(
        None, description="command for the third candidate (default: the coder command)"
    )
    proof_command: str | None = Field(None, description="proof for steps without a proof_command")
    delivery: Literal["patch_first", "commit_first"] | None = Field(
        None,
        description="patch_first (patches in out) or commit_first (git am); default: each step's",
    )
    branch: str | None = Field(
        None, description="commit_first target (default: the checked-out branch)"
    )
    out: str | None = Field(None, description="the run's folder (default mesh-runs/RUN_ID)")
    remaining_five_hour: float = Field(100.0, description="percent of the 5-hour budget left")
    remaining_weekly: float = Field(100.0, description="percent of the weekly budget left")
    max_threads: int = Field(12, description="most units at once")
    proof_timeout: float = Field(600.0, description="seconds per proof run")
    call_timeout: float = Field(3600.0, description="seconds per adapter call, coders included")
    sandbox: bool = Field(
        default=False,
        description="run coder commands and proofs in bubblewrap (needs bwrap)",
    )
    no_network: bool = Field(default=False, description="with sandbox: no network, loopback only")

    async def execute(self, call: Call) -> Result:
        # Everything is checked before anything is created, as `mesh run` does.
        if (self.plan is None) == (self.plan_document is None):
            raise OptionError(
                "InvalidOptionValue", "give plan (a file) or plan_document, one of them"
            )
        repo = call.root.path(self.repo, name="repo")
        authors = Authors(
            coder_command=self.coder_command,
            reducer_command=self.reducer_command,
            agent=self.agent,
            fixer_agent=self.fixer_agent,
            agent_model=self.agent_model,
            budget_from_agent=self.budget_from_agent,
        )
        box = _sandbox(sandbox=self.sandbox, no_network=self.no_network)
        plan_file = None if self.plan is None else call.root.path(self.plan, name="plan")
        document = (
            self.plan_document
            if plan_file is None
            else loads_json(await _read(plan_file), subject="plan")
        )
        run_id = uuid.uuid4().hex[:12]
        folder = call.root.path(self.out or f"mesh-runs/{run_id}", name="out")
        if plan_file is not None and plan_file.is_relative_to(folder):
            raise PathCollisionError(
                f"out {folder} holds plan {plan_file}: the run writes there; "
                "keep the plan elsewhere"
            )
        setup = RunSetup.checked(
            document,
            repo=repo,
            folder=folder,
            run_id=run_id,
            authors=authors,
            box=box,
            remaining_five_hour=self.remaining_five_hour,
            remaining_weekly=self.remaining_weekly,
            max_threads=self.max_threads,
            proof_command=self.proof_command,
            delivery=self.delivery,
            branch=self.branch,
            proof_timeout=self.proof_timeout,
            call_timeout=self.call_timeout,
            ray=None,
            estimates=None,
        )
        return _run_document("run", await _watched(call, setup.start))


async def _read(path: Path) -> str:
    return await anyio.to_thread.run_sync(functools.partial(read_text, path, what="plan"))


class ResumeArguments(Arguments):
    """
    Continue a stopped run from its run store (`mesh resume`), with the coders it started with.

    Finished units stay as they were; units in flight restart from their
    recorded state; nothing is delivered twice. Progress as for run.
    """

    run: str = Field(description=_RUN_HELP)
    runs: str = Field("mesh-runs", description=_RUNS_HELP)

    async def execute(self, call: Call) -> Result:
        store, _ = _stored_run(call.root, self.run, self.runs)
        # Owned before its options are read, as `mesh resume` does.
        with owning(store.parent):
            # The store is a file the client chose: the folders it names are confined too.
            start = resumed(
                store, ray=None, confine=lambda value, name: call.root.path(value, name=name)
            )
            return _run_document("resume", await _watched(call, start))


@attrs.frozen(kw_only=True)
class ToolSpec:
    """
    One tool: its name, title, argument model and behaviour hints for the host.

    .. versionadded:: 0.1.0
    """

    name: str
    title: str
    arguments: type[Arguments]
    read_only: bool = False
    destructive: bool = False
    """Whether it may overwrite or delete (hosts ask before calling such tools)."""
    idempotent: bool = True

    @property
    def description(self) -> str:
        """The tool's description: its argument model's docstring."""
        return " ".join((self.arguments.__doc__ or "").split())


TOOLS: Final = (
    ToolSpec(name="budget", title="Budget clamp", arguments=BudgetArguments, read_only=True),
    ToolSpec(name="replay", title="Budget replay", arguments=ReplayArguments, read_only=True),
    ToolSpec(
        name="plan_sync", title="Plan status counts", arguments=PlanSyncArguments, read_only=True
    ),
    ToolSpec(name="slice", title="Slice a plan", arguments=SliceArguments, destructive=True),
    ToolSpec(name="wave", title="Next wave as CSV", arguments=WaveArguments, destructive=True),
    ToolSpec(
        name="run_csv", title="Check a batch CSV", arguments=RunCsvArguments, destructive=True
    ),
    ToolSpec(name="ledger", title="Ledger", arguments=LedgerArguments, read_only=True),
    ToolSpec(
        name="run",
        title="Run a plan",
        arguments=RunArguments,
        destructive=True,
        idempotent=False,
    ),
    ToolSpec(name="status", title="Run status", arguments=StatusArguments, read_only=True),
    ToolSpec(
        name="resume",
        title="Resume a run",
        arguments=ResumeArguments,
        destructive=True,
        idempotent=False,
    ),
    ToolSpec(
        name="report", title="HTML report of a run", arguments=ReportArguments, destructive=True
    ),
)
"""Every tool of ``mesh mcp``, in the order they are listed."""
