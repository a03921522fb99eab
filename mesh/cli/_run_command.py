"""``mesh run`` and ``mesh demo``: whole runs on a repository, shown as they go."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import shlex
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import attrs
from rich.console import Console

from ..agents._cli import AgentCoder, AgentFixer
from ..agents._registry import agent_budget, agent_cli
from ..contracts._convert import loads_json
from ..contracts._enums import DeliveryMode
from ..contracts._errors import (
    InputError,
    MeshError,
    OptionError,
    PathCollisionError,
    RunCancelled,
)
from ..contracts._events import LedgerEvent
from ..contracts._files import StrPath, atomic_write_text, ensure_distinct, read_text
from ..contracts._records import BudgetDecision
from ..contracts._text import one_line
from ..engine._plan_state import plan_units
from ..engine._ray import RayExecutor
from ..engine._report import prose_ledger, render_report
from ..engine._resume import UNIT_STATES, resume_point, states_at
from ..engine._roles import Roles
from ..engine._scheduler import BudgetProvider
from ..engine._summary import unit_durations
from ..engine._sync import run_to_result
from ..git._coders import CommandCoder, check_command_template
from ..git._git import git
from ..host._owner import owning
from ..host._sandbox import Sandbox, require_sandbox
from ..planning._budget import budget_policy
from ..store._front import ctrl_c, resume_async, run_async
from ..store._repo_run import RepositoryRun, stored_plan
from ..store._store import STORE_FILE, RunStore, StoreError
from ._demo import create_demo_repository, demo_coder_command
from ._live_view import open_view
from ._stopping import SignalStop
from ._watch_plan import watching_plan

__all__ = ["RunReport", "demo", "report", "resume", "run", "status", "stored_ledger"]

_CALL_TIMEOUT: Final = 3600.0


@attrs.frozen(kw_only=True)
class RunReport:
    """
    What ``mesh run`` prints, its exit code, and the run itself.

    .. versionadded:: 0.1.0
    """

    text: str
    exit_code: int
    run: RepositoryRun


class _Refusals:
    """
    Candidates the run refused, and why: a failed apply (scope or conflict) or a failed proof.

    Ids and reasons are kept as the adapters gave them; `_report` escapes them.
    """

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def on_event(self, event: LedgerEvent) -> None:
        decision = event.data.get("decision")
        if event.event != "adapter_call" or decision not in {"apply_failed", "fail"}:
            return
        what = "not applied" if decision == "apply_failed" else "proof failed"
        self.reasons[event.candidate_id or "?"] = f"{what}: {event.data.get('evidence', '')}"


def _idle(plan_state: Mapping[str, Any]) -> tuple[str, int]:
    """What a run that ran nothing says, and its exit code: 1 unless every step is completed."""
    statuses = [str(step.get("status", "pending")) for step in plan_state.get("plan", ())]
    others = Counter(status for status in statuses if status != "completed")
    if not others:
        return "Nothing to run: every step is completed.", 0
    listed = ", ".join(f"{count} {one_line(status)!r}" for status, count in sorted(others.items()))
    done = len(statuses) - others.total()
    return (
        f"Nothing to run: no step is pending or in_progress ({done} completed; {listed}).",
        1,
    )


def _report(finished: RepositoryRun, refusals: _Refusals) -> RunReport:
    result = finished.result
    idle, idle_code = _idle(result.plan_state) if not result.outcomes else ("", 0)
    lines = [result.ledger().rstrip("\n")] if result.outcomes else [idle]
    lines += [
        "",
        (
            f"Run {result.run_id}: ledger {finished.ledger_path}, "
            f"plan state {finished.plan_path}, patches {finished.patches}."
        ),
    ]
    # Ids, evidence and failure evidence come from adapters and agents: each goes
    # through one_line, so that none can print a line of its own or rewrite one.
    if refusals.reasons:
        lines += ["", "Candidates refused:"]
        lines += [
            f"  {one_line(cid)}: {one_line(reason)}"
            for cid, reason in sorted(refusals.reasons.items())
        ]
    for outcome in result.outcomes:
        if outcome.state != "completed":
            lines.append(
                f"{one_line(outcome.unit_id)} {outcome.state}: {outcome.failure_code} "
                f"({one_line(outcome.evidence)})"
            )
    incomplete = len(result.outcomes) - len(result.completed)
    code = 1 if incomplete else idle_code
    return RunReport(text="\n".join(lines), exit_code=code, run=finished)


def run(
    *,
    plan: StrPath,
    repo: StrPath = ".",
    coder_command: str | None = None,
    agent: str | None = None,
    fixer_agent: str | None = None,
    agent_model: str | None = None,
    budget_from_agent: bool = False,
    reducer_command: str | None = None,
    proof_command: str | None = None,
    delivery: str | None = None,
    branch: str | None = None,
    out: StrPath | None = None,
    remaining_five_hour: float = 100.0,
    remaining_weekly: float = 100.0,
    max_threads: int = 12,
    proof_timeout: float = 600.0,
    call_timeout: float = _CALL_TIMEOUT,
    ray: str | None = None,
    sandbox: bool = False,
    no_network: bool = False,
    estimates_from: StrPath | None = None,
    runs: StrPath = "mesh-runs",
    console: Console | None = None,
    view: str = "auto",
    watch_plan: bool = False,
) -> RunReport:
    """
    ``mesh run``: run a plan on a repository with real worktrees, proofs and delivery.

    Coders run ``coder_command`` (a `CommandCoder` template) for candidates 1
    and 2, and ``reducer_command`` (default: the coder command) for candidate
    3; or, with ``agent`` (``codex``, ``claude``, ``aider``), that agent CLI
    writes all three (`mesh.agents.AgentCoder`), with ``agent_model`` if
    given. `MechanicalFixer` adjudicates, or ``fixer_agent`` read-only
    (`mesh.agents.AgentFixer`); `GitIntegrator` delivers. With
    ``budget_from_agent`` the budget is read from the agent's own rate-limit
    account, again during the run. The ledger,
    plan state and patches go to ``out`` (default ``mesh-runs/<run id>``).
    With ``ray`` (``local``, ``auto`` or ``ray://HEAD:10001``) the coder,
    applier, prover and fixer calls run on that Ray cluster (`RayExecutor`).
    With ``sandbox``, coder commands and proofs run in bubblewrap (the system
    read-only, only their workspace writable; ``no_network``: no network
    either); bubblewrap is checked before anything is created. With
    ``estimates_from`` (a past run: its folder, store or id under ``runs``),
    each unit's duration there, found by its step's text, is its estimate:
    ready units start by longest estimated remaining path.

    While it runs, ``view`` shows it on ``console`` (default: stderr): ``live``
    draws the units in flight, their stage, the concurrency and the latest
    failures; ``lines`` prints one line per unit started or ended, concurrency
    change and end of the run; ``quiet`` shows nothing; ``auto`` is live on a
    terminal and lines elsewhere.

    With ``watch_plan``, the plan file is read again whenever it is saved, and
    each change goes to the run (`Orchestrator.update_plan`: steps added, edited
    before they start, or cancelled); the view tells what each change did, or
    why it was refused.

    .. versionadded:: 0.1.0
    """
    # Fail on a bad template, agent or a missing sandbox before anything is read or created.
    authors = Authors(
        coder_command=coder_command,
        reducer_command=reducer_command,
        agent=agent,
        fixer_agent=fixer_agent,
        agent_model=agent_model,
        budget_from_agent=budget_from_agent,
    )
    box = _sandbox(sandbox=sandbox, no_network=no_network)
    document = loads_json(read_text(plan, what="plan"), subject="plan")
    run_id = uuid.uuid4().hex[:12]
    folder = Path(out) if out is not None else Path("mesh-runs") / run_id
    # The run writes into its folder (plan state, ledger, store, patches): never over the plan.
    if Path(plan).resolve().is_relative_to(folder.resolve()):
        raise PathCollisionError(
            f"--out {folder} holds PLAN {plan}: the run writes there; keep the plan elsewhere"
        )
    setup = RunSetup.checked(
        document,
        repo=repo,
        folder=folder,
        run_id=run_id,
        authors=authors,
        box=box,
        remaining_five_hour=remaining_five_hour,
        remaining_weekly=remaining_weekly,
        max_threads=max_threads,
        proof_command=proof_command,
        delivery=delivery,
        branch=branch,
        proof_timeout=proof_timeout,
        call_timeout=call_timeout,
        ray=ray,
        estimates=_past_estimates(estimates_from, runs, document),
    )
    return _watched(
        console,
        setup.start,
        folder,
        view=view,
        objectives=_objectives(document),
        watch_plan=plan if watch_plan else None,
    )


# The share of the call timeout an agent gets before it stops itself.
_AGENT_SHARE: Final = 0.9


@attrs.frozen(kw_only=True)
class Authors:
    """Who writes and judges the candidates of a `mesh run`: commands or agent CLIs, checked."""

    coder_command: str | None
    reducer_command: str | None
    agent: str | None
    fixer_agent: str | None
    agent_model: str | None
    budget_from_agent: bool

    def __attrs_post_init__(self) -> None:
        if (self.coder_command is None) == (self.agent is None):
            raise OptionError(
                "MissingRequiredOption" if self.agent is None else "InvalidOptionValue",
                "give one of --coder-command TEMPLATE and --agent AGENT",
            )
        if self.agent is not None and self.reducer_command is not None:
            raise OptionError("InvalidOptionValue", "--reducer-command goes with --coder-command")
        if self.agent_model is not None and self.agent is None and self.fixer_agent is None:
            raise OptionError("InvalidOptionValue", "--agent-model needs --agent or --fixer-agent")
        model = self.agent_model
        if model is not None and (
            not model.strip() or model.startswith("-") or one_line(model) != model
        ):
            raise OptionError(
                "InvalidOptionValue",
                f"--agent-model expects a model name, got {model!r}",
            )
        if self.budget_from_agent and self.agent is None:
            raise OptionError("InvalidOptionValue", "--budget-from-agent needs --agent")
        if self.coder_command is not None:
            check_command_template(self.coder_command)
            check_command_template(self.reducer_command or self.coder_command)

    @classmethod
    def from_stored(cls, options: Mapping[str, Any]) -> Authors:
        def text(name: str) -> str | None:
            value = options.get(name)
            return None if value is None else str(value)

        return cls(
            coder_command=text("coder_command"),
            reducer_command=text("reducer_command"),
            agent=text("agent"),
            fixer_agent=text("fixer_agent"),
            agent_model=text("agent_model"),
            budget_from_agent=bool(options.get("budget_from_agent")),
        )

    def stored(self) -> dict[str, object]:
        return attrs.asdict(self)

    def budget(
        self, *, remaining_five_hour: float, remaining_weekly: float, max_threads: int
    ) -> BudgetDecision | BudgetProvider:
        if self.budget_from_agent and self.agent is not None:
            return agent_budget(self.agent, max_threads=max_threads)
        return budget_policy(
            remaining_five_hour=remaining_five_hour,
            remaining_weekly=remaining_weekly,
            max_threads=max_threads,
        )

    def roles(self, repo: StrPath, box: Sandbox | None, call_timeout: float) -> Roles:
        # An agent stops itself before its call times out: it ends as its own clean reject,
        # with what it reported, rather than as a call the engine abandons and repeats.
        timeout = call_timeout * _AGENT_SHARE
        fixer = None
        if self.fixer_agent is not None:
            fixer = AgentFixer(
                repo,
                agent_cli(self.fixer_agent, model=self.agent_model),
                sandbox=box,
                timeout=timeout,
            )
        if self.agent is not None:
            author = AgentCoder(
                repo, agent_cli(self.agent, model=self.agent_model), sandbox=box, timeout=timeout
            )
            return Roles(coder=author, reducer=author, fixer=fixer)
        coder_command = self.coder_command or ""
        return Roles(
            coder=CommandCoder(repo, coder_command, sandbox=box),
            reducer=CommandCoder(repo, self.reducer_command or coder_command, sandbox=box),
            fixer=fixer,
        )


Start = Callable[[Callable[[LedgerEvent], None]], Awaitable[RepositoryRun]]
"""Starts a run or a resume, given the callback that follows its ledger events."""


@attrs.frozen(kw_only=True)
class RunSetup:
    """
    A `mesh run` checked and built, ready to start: for the command line and the MCP tool.

    Everything is checked before anything is created; the options kept in the
    run store (``cli``) let `mesh resume` continue it, however it was started.
    """

    document: object
    repo: StrPath
    folder: Path
    run_id: str
    roles: Roles
    budget: BudgetDecision | BudgetProvider
    box: Sandbox | None
    executor: RayExecutor | None
    delivery_mode: DeliveryMode | None
    proof_command: str | None
    branch: str | None
    proof_timeout: float
    call_timeout: float
    estimates: Mapping[str, float] | None
    stored: Mapping[str, object]

    @classmethod
    def checked(
        cls,
        document: object,
        *,
        repo: StrPath,
        folder: Path,
        run_id: str,
        authors: Authors,
        box: Sandbox | None,
        remaining_five_hour: float,
        remaining_weekly: float,
        max_threads: int,
        proof_command: str | None,
        delivery: str | None,
        branch: str | None,
        proof_timeout: float,
        call_timeout: float,
        ray: str | None,
        estimates: Mapping[str, float] | None,
    ) -> RunSetup:
        """The run's roles, budget and executor from its options (checked as it goes)."""
        return cls(
            document=document,
            repo=repo,
            folder=folder,
            run_id=run_id,
            roles=authors.roles(repo, box, call_timeout),
            budget=authors.budget(
                remaining_five_hour=remaining_five_hour,
                remaining_weekly=remaining_weekly,
                max_threads=max_threads,
            ),
            box=box,
            executor=_ray_executor(ray),
            delivery_mode=DeliveryMode(delivery) if delivery is not None else None,
            proof_command=proof_command,
            branch=branch,
            proof_timeout=proof_timeout,
            call_timeout=call_timeout,
            estimates=estimates,
            stored={
                **authors.stored(),
                "call_timeout": call_timeout,
                "remaining_five_hour": remaining_five_hour,
                "remaining_weekly": remaining_weekly,
                "max_threads": max_threads,
                "ray": ray,
                "sandbox": box is not None,
                "no_network": box is not None and not box.network,
            },
        )

    def start(self, follow: Callable[[LedgerEvent], None]) -> Awaitable[RepositoryRun]:
        """Start the run, ``follow`` seeing each ledger event."""
        return run_async(
            self.document,
            repo=self.repo,
            out=self.folder,
            roles=self.roles,
            budget=self.budget,
            delivery_mode=self.delivery_mode,
            default_proof_command=self.proof_command,
            branch=self.branch,
            proof_timeout=self.proof_timeout,
            call_timeout=self.call_timeout,
            on_event=follow,
            run_id=self.run_id,
            extra_config={"cli": dict(self.stored)},
            executor=self.executor,
            sandbox=self.box,
            estimates=self.estimates,
        )


def _past_estimates(
    past: StrPath | None, runs: StrPath, document: object
) -> dict[str, float] | None:
    """
    Each unit's duration in the past run ``past``, by the unit id it has in ``document``.

    Units are matched by their step's text (the objective): unit ids are given
    by position, so a plan with a step added or removed still finds its steps.
    """
    if past is None:
        return None
    with RunStore.open(_store_path(past, runs)) as store:
        past_units = stored_plan(store.config, store.path)
        durations = unit_durations(store.events())
    seconds_by_step = {
        unit.objective: durations[unit.id] for unit in past_units if unit.id in durations
    }
    return {
        unit.id: seconds_by_step[unit.objective]
        for unit in plan_units(document)[0]
        if unit.objective in seconds_by_step
    }


def _sandbox(*, sandbox: bool, no_network: bool) -> Sandbox | None:
    """``--sandbox`` (and ``--no-network``): bubblewrap, checked to work here, or an error."""
    if no_network and not sandbox:
        raise OptionError("InvalidOptionValue", "--no-network needs --sandbox")
    if not sandbox:
        return None
    require_sandbox()
    return Sandbox(network=not no_network)


def _ray_executor(address: str | None) -> RayExecutor | None:
    """``--ray ADDRESS``: ``local`` starts a Ray instance here, anything else is joined."""
    if address is None:
        return None
    if not address.strip():
        raise OptionError(
            "InvalidOptionValue", "--ray needs an address: local, auto or ray://HOST:PORT"
        )
    return RayExecutor(None if address == "local" else address)


def _resume_command(folder: Path) -> str:
    """
    The command that continues the run in ``folder``, as it can be pasted into a shell.

    A name that would read as an option starts with ``./``; one with characters a
    terminal line cannot show as they are gets no command to paste, only what to run.
    """
    text = str(folder)
    if one_line(text) != text:
        return "mesh resume RUN (RUN: the run's folder)"
    if text.startswith("-"):
        text = f"./{text}"
    return f"mesh resume {shlex.quote(text)}"


def _objectives(document: object) -> dict[str, str]:
    """Each unit's objective by unit id, for the view (none for a bad plan: the run says why)."""
    try:
        units = plan_units(document)[0]
    except MeshError:
        return {}
    return {unit.id: unit.objective for unit in units}


def _watched(
    console: Console | None,
    main: Callable[[Callable[[LedgerEvent], None]], Awaitable[RepositoryRun]],
    folder: Path,
    *,
    view: str = "auto",
    objectives: Mapping[str, str] | None = None,
    watch_plan: StrPath | None = None,
) -> RunReport:
    """
    Run ``main`` shown by ``view``, with a record of refused candidates, then report.

    With ``watch_plan``, each saved change of that plan file goes to the run.

    Ctrl-C stops the run, and so do SIGTERM and SIGHUP (see `SignalStop`); the
    interrupt carries the command that continues it (``resume_command``), which
    the command line prints once the view is gone.
    """
    shown = open_view(view, console, objectives or {})
    refusals = _Refusals()
    signals = SignalStop(shown.abandon)

    def follow(event: LedgerEvent) -> None:
        shown.on_event(event)
        refusals.on_event(event)

    def started() -> Awaitable[RepositoryRun]:
        if watch_plan is None:
            return main(follow)
        return watching_plan(lambda: main(follow), watch_plan, shown.say)

    try:
        # The signals are caught while the view opens and closes too (see `SignalStop`).
        with signals.handled(), shown.shown():
            return _report(run_to_result(signals.run, started), refusals)
    except BaseException as stopped:
        # A signal cancels a running engine with a reason naming it: RunCancelled comes out.
        by_signal = signals.stopped if isinstance(stopped, RunCancelled) else None
        interrupt = by_signal or ctrl_c(stopped)
        if interrupt is None:
            raise
        if (folder / STORE_FILE).is_file():
            interrupt.resume_command = _resume_command(folder)  # type: ignore[attr-defined]
        if interrupt is stopped:
            raise
        raise interrupt from None


def _store_path(run: StrPath, runs: StrPath) -> Path:
    """A run given as its folder, its store file, or its id under ``runs``."""
    given = Path(run)
    for candidate in (given, Path(runs) / given):
        if candidate.is_dir():
            return candidate / STORE_FILE
        if candidate.is_file():
            return candidate
    raise InputError(f"no run {run!s} (looked for {given} and {Path(runs) / given})")


def resume(
    *,
    run: StrPath,
    runs: StrPath = "mesh-runs",
    ray: str | None = None,
    console: Console | None = None,
    view: str = "auto",
) -> RunReport:
    """
    ``mesh resume``: continue a ``mesh run`` that stopped, from its run store.

    ``run`` is the run's folder, its ``run.sqlite``, or its id under ``runs``.
    Finished units stay as they were; in-flight units restart from their
    recorded state; nothing is integrated twice (see `mesh.resume`).
    The calls run where the first ``mesh run`` sent them (its ``--ray``), or
    on the cluster ``ray`` names; a run started with ``--sandbox`` resumes in
    the sandbox. ``view`` shows it as `run` does.

    .. versionadded:: 0.1.0
    """
    path = _store_path(run, runs)
    # Owned before anything else is done (`mesh.resume` keeps this ownership).
    with owning(path.parent):
        return _resume(path, ray=ray, console=console, view=view)


def _resume(path: Path, *, ray: str | None, console: Console | None, view: str) -> RunReport:
    start = resumed(path, ray=ray)
    with RunStore.open(path) as store:
        objectives = {unit.id: unit.objective for unit in stored_plan(store.config, path)}
    return _watched(console, start, path.parent, view=view, objectives=objectives)


def _number(value: object, least: float, most: float = math.inf) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and least <= value <= most
    )


def _stored_cli_problems(options: Mapping[str, Any]) -> list[str]:
    """What is wrong with the command-line options a run store kept (a damaged store)."""
    problems = [
        f"{name} is not a percentage"
        for name in ("remaining_five_hour", "remaining_weekly")
        if not _number(options.get(name), -1e9, 1e9)
    ]
    threads = options.get("max_threads")
    if not (isinstance(threads, int) and not isinstance(threads, bool) and 0 <= threads <= 10**6):
        problems.append("max_threads is not a count")
    timeout = options.get("call_timeout")
    if timeout is not None and not _number(timeout, 1e-9, 1e9):
        problems.append("call_timeout is not a number of seconds")
    problems += [
        f"{name} is not true or false"
        for name in ("sandbox", "no_network", "budget_from_agent")
        if options.get(name) not in (None, True, False)
    ]
    problems += [
        f"{name} is not text"
        for name in (
            "coder_command",
            "reducer_command",
            "agent",
            "fixer_agent",
            "agent_model",
            "ray",
        )
        if not isinstance(options.get(name), str | None)
    ]
    return problems


def resumed(
    path: Path, *, ray: str | None, confine: Callable[[str, str], object] | None = None
) -> Start:
    """
    How to continue the `mesh run` stored at ``path``: its coders, budget, sandbox and executor.

    ``ray`` overrides where the first run sent its calls. ``confine(path, name)``
    raises for a folder the store names (its repository, its workspaces) that
    the caller may not let the run touch. The caller owns the run.
    """
    with RunStore.open(path) as store:
        options = store.config.get("cli")
        repo = store.config.get("repo")
        workspaces = store.config.get("workspaces")
    if not isinstance(options, dict) or not isinstance(repo, str):
        raise InputError(f"{path} was not started by `mesh run`: resume it from Python")
    if confine is not None:
        confine(repo, "the stored run's repository")
        if isinstance(workspaces, str):
            confine(workspaces, "the stored run's workspaces")
    if problems := _stored_cli_problems(options):
        raise StoreError(
            f"{path} is damaged: its command-line options are unreadable ({'; '.join(problems)})"
        )
    authors = Authors.from_stored(options)
    budget = authors.budget(
        remaining_five_hour=float(options["remaining_five_hour"]),
        remaining_weekly=float(options["remaining_weekly"]),
        max_threads=int(options["max_threads"]),
    )
    stored_ray = options.get("ray")
    executor = _ray_executor(ray if ray is not None else stored_ray and str(stored_ray))
    box = _sandbox(
        sandbox=options.get("sandbox") is True, no_network=options.get("no_network") is True
    )
    roles = authors.roles(repo, box, float(options.get("call_timeout") or _CALL_TIMEOUT))

    def start(follow: Callable[[LedgerEvent], None]) -> Awaitable[RepositoryRun]:
        return resume_async(
            path,
            roles=roles,
            budget=budget,
            on_event=follow,
            executor=executor,
            sandbox=box,
        )

    return start


def _stored(run: StrPath, runs: StrPath) -> tuple[str, dict[str, Any], list[LedgerEvent]]:
    with RunStore.open(_store_path(run, runs)) as store:
        return store.run_id, dict(store.config), list(store.events())


def status(*, run: StrPath, runs: StrPath = "mesh-runs") -> dict[str, object]:
    """
    ``mesh status``: a stored run's units by state: completed, failed, blocked, in_flight, pending.

    .. versionadded:: 0.1.0
    """
    path = _store_path(run, runs)
    run_id, config, events = _stored(path, runs)
    units = stored_plan(config, path)
    point = resume_point(events)
    states = states_at(point, [unit.id for unit in units])
    finished = bool(events) and events[-1].event == "run_finished"
    listing: list[dict[str, object]] = []
    for unit in units:
        entry: dict[str, object] = {"id": unit.id, "state": states[unit.id]}
        checkpoint = point.checkpoints.get(unit.id)
        if checkpoint is not None:
            entry["attempt"] = checkpoint.attempt
            if checkpoint.outcome is not None and checkpoint.outcome.failure_code is not None:
                entry["failure_code"] = checkpoint.outcome.failure_code.value
        listing.append(entry)
    return {
        "command": "status",
        "run_id": run_id,
        "finished": finished,
        "events": len(events),
        "by_state": {
            state: n for state in UNIT_STATES if (n := list(states.values()).count(state))
        },
        "units": listing,
    }


def stored_ledger(*, run: StrPath, runs: StrPath = "mesh-runs") -> str:
    """The prose Orchestration Ledger of a stored run (empty when nothing ran)."""
    _, _, events = _stored(run, runs)
    return prose_ledger(events)


def report(*, run: StrPath, output: StrPath, runs: StrPath = "mesh-runs") -> dict[str, object]:
    """
    ``mesh report``: write a stored run's picture as one self-contained HTML page.

    The page (see `mesh.render_report`) has the units by state, a timeline of
    every unit (with its objective and dependencies from the stored plan) and
    candidate lane coloured by outcome, the concurrency over time, and the
    prose ledger; it loads nothing from the network.

    .. versionadded:: 0.1.0
    """
    store = _store_path(run, runs)
    ensure_distinct(output, store, output_flag="--output", input_flags=("RUN",))
    run_id, config, events = _stored(store, runs)
    try:
        plan = stored_plan(config, store)
    except StoreError:
        # The page is most wanted when a run went wrong: a damaged plan costs
        # its rows their objectives and dependencies, not the page.
        plan = ()
    page = render_report(events, title=f"mesh run {run_id}", plan=plan)
    atomic_write_text(output, page, what="report")
    return {
        "command": "report",
        "run_id": run_id,
        "output": str(output),
        "events": len(events),
        "units": len({event.unit_id for event in events if event.unit_id is not None}),
    }


def demo(
    *, folder: StrPath | None = None, console: Console | None = None, view: str = "auto"
) -> RunReport:
    """
    ``mesh demo``: create a small repository and run a four-unit plan on it for real.

    The coders are a deterministic script; proofs run the package's pytest
    tests in each candidate's worktree; every accepted unit becomes a commit
    (``git am``). Everything is created in ``folder`` (default: a temporary
    folder, removed afterwards). ``view`` shows the run as `run` does.

    .. versionadded:: 0.1.0
    """
    if importlib.util.find_spec("pytest") is None:
        raise InputError("mesh demo proves candidates with pytest: pip install 'mesh[demo]'")
    with contextlib.ExitStack() as stack:
        if folder is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mesh-demo-")))
        else:
            root = Path(folder).resolve()
            if root.exists() and not root.is_dir():
                raise InputError(f"--folder {folder}: not a folder")
            if root.is_dir() and any(root.iterdir()):
                raise InputError(f"--folder {folder}: not empty")
        repo, plan, script = anyio.run(create_demo_repository, root)
        return _with_history(
            run(
                plan=plan,
                repo=repo,
                coder_command=demo_coder_command(script),
                delivery=DeliveryMode.COMMIT_FIRST.value,
                out=root / "out",
                console=console,
                view=view,
            ),
            repo,
            kept=folder is not None,
        )


def _with_history(report: RunReport, repo: Path, *, kept: bool) -> RunReport:
    """The demo's report, followed by the repository's history and where it is."""
    history = anyio.run(_history, repo)
    text = f"{report.text}\n\nThe demo repository's history:\n{history}"
    if kept:
        text += f"\nThe demo repository is {repo}."
    else:
        text += "\n(The demo folder was temporary; pass --folder PATH to keep it.)"
    return attrs.evolve(report, text=text)


async def _history(repo: Path) -> str:
    return await git("log", "--format=  %s", cwd=repo)
