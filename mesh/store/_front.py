"""
The front door: `run`, `run_async`, `resume` and `resume_async`.

One way in for every run. Without a repository, the roles you give run the
plan in memory (`Orchestrator`); with ``repo`` and ``out``, on that
repository with real worktrees, proofs, delivery and a run store, every
role you leave unset played by mesh's own git adapter, and a stopped run
continues with `resume`. Every option is a typed keyword, checked before
anything starts (a misspelt one is a type error, and an `OptionError`
naming the closest option at run time).
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - only asked whether its loop runs in this thread
import difflib
import json
import math
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypedDict, TypeVar, Unpack, overload

from ..contracts._clock import Clock
from ..contracts._enums import DeliveryMode, Lane
from ..contracts._errors import InputError, MeshError, OptionError, ValidationError
from ..contracts._events import CallbackSink, LedgerEvent, LedgerSink
from ..contracts._records import BudgetDecision, Plan, Unit
from ..engine._executors import Executor
from ..engine._gateway import MIN_HEARTBEAT_TIMEOUT
from ..engine._results import RunResult
from ..engine._retry import RetryPolicy, checked_retry
from ..engine._roles import Roles
from ..engine._scheduler import Orchestrator, checked_estimates
from ..engine._sync import run_to_result
from ..engine._tracing import TracerProviderLike
from ..host._sandbox import Sandbox
from ._repo_run import (
    STORED_OPTIONS,
    RepositoryRun,
    resume_repository_run,
    start_repository_run,
)
from ._store import STORE_FILE

__all__ = [
    "Backend",
    "EngineOptions",
    "MemoryOptions",
    "RepositoryOptions",
    "ResumeOptions",
    "ctrl_c",
    "resume",
    "resume_async",
    "run",
    "run_async",
]

Backend = Literal["asyncio", "trio"]
"""The async library a synchronous `run` or `resume` runs on."""

T = TypeVar("T")
_PlanInput = Plan | Sequence[Unit] | object
"""A `Plan`, `Unit` records, or a plan document (an update_plan payload, a units document)."""


class EngineOptions(TypedDict, total=False):
    """
    The options of every run (`run`, `run_async`); each as `Orchestrator` takes it.

    None, where an option allows it, is the same as leaving it out.

    .. versionadded:: 0.1.0
    """

    budget: BudgetDecision | Callable[[], BudgetDecision | Awaitable[BudgetDecision]] | None
    """The budget decision, or a provider of it re-read during the run."""
    max_attempts: int
    """Attempts per unit (rework starts the next one); default 2."""
    call_timeout: float | None
    """Seconds an adapter call may take (None: no limit); 600 in memory, 3600 on a repository."""
    heartbeat_timeout: float | None
    """Seconds a call that sends heartbeats (`mesh.heartbeat`) may go without one before it is
    ended as hung (None, the default: heartbeats are not listened for)."""
    lease_ttl: float
    """Seconds a write-scope lease lives without renewal; default 900."""
    clean_stretch: int
    """Clean units in a row that restore the concurrency target; default 3."""
    clock: Clock | None
    """Where time comes from (default: the event loop's clock)."""
    sinks: Sequence[LedgerSink]
    """More ledger sinks, receiving every event."""
    on_event: Callable[[LedgerEvent], object] | None
    """Called with every ledger event as it happens."""
    run_id: str | None
    """Names the run (default: a fresh random id)."""
    executor: Executor | None
    """Where adapter calls run (default: this process; e.g. `RayExecutor`)."""
    estimates: Mapping[str, float] | None
    """Seconds each unit is expected to take, by unit id: ready units start by longest path."""
    delivery_mode: DeliveryMode | None
    """Deliver every unit this way (default: each unit's own)."""
    default_proof_command: str | None
    """The proof command of units that name none."""
    strict: bool
    """Stop at the first invalid answer or adapter error, explained (see `Orchestrator`)."""
    retry: RetryPolicy | Mapping[Lane, RetryPolicy] | Mapping[str, RetryPolicy] | None
    """How failed adapter calls are made again: one `RetryPolicy`, or one per lane (kept in a
    repository run's store)."""
    tracer_provider: TracerProviderLike | None
    """Trace the run with this OpenTelemetry ``TracerProvider`` (see `Orchestrator`); not stored."""


class MemoryOptions(EngineOptions, total=False):
    """
    The options of a run in memory (no ``repo``).

    .. versionadded:: 0.1.0
    """

    max_threads: int
    """Upper bound of the default budget (without ``budget``); default 12."""
    ledger_path: str | os.PathLike[str] | None
    """Also write the ledger as JSON lines to this file."""


class RepositoryOptions(EngineOptions, total=False):
    """
    The options of a run on a repository (with ``repo`` and ``out``); kept in its store.

    .. versionadded:: 0.1.0
    """

    branch: str | None
    """The branch ``commit_first`` units are delivered to (default: the checked-out one)."""
    proof_timeout: float
    """Seconds a proof command of the built-in prover may run; default 600."""
    pool_size: int
    """Workspaces kept for reuse; default 4."""
    workspaces: str | os.PathLike[str] | None
    """Where the run's workspaces go: a folder outside the repository, in which mesh removes
    only folders it named itself (default: inside the repository's git directory, or, when a
    role cannot edit under a ``.git`` folder, as Claude Code cannot, a folder of the
    repository's in ``~/.cache/mesh/workspaces``)."""
    sandbox: Sandbox | None
    """Run the built-in prover's proofs (and pass it to your `CommandCoder`) in bubblewrap."""
    extra_config: Mapping[str, Any] | None
    """JSON values kept in the run store for whoever resumes the run."""


class ResumeOptions(TypedDict, total=False):
    """
    The options of `resume` and `resume_async`: what a run store cannot keep.

    .. versionadded:: 0.1.0
    """

    budget: BudgetDecision | Callable[[], BudgetDecision | Awaitable[BudgetDecision]] | None
    clock: Clock | None
    sinks: Sequence[LedgerSink]
    on_event: Callable[[LedgerEvent], object] | None
    executor: Executor | None
    sandbox: Sandbox | None
    strict: bool
    tracer_provider: TracerProviderLike | None


_MEMORY: Final = frozenset(MemoryOptions.__annotations__)
_REPOSITORY: Final = frozenset(RepositoryOptions.__annotations__)
_RESUME: Final = frozenset(ResumeOptions.__annotations__)


def _whole(least: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if type(value) is not int:
            return f"expected an integer, got {value!r}"
        return None if value >= least else f"must be >= {least}, got {value}"

    return check


# Longer than any run; beyond it, deadlines and lease times stop being numbers a clock adds.
_MOST_SECONDS: Final = 10**9


def _seconds(value: object) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return f"expected a number of seconds, got {value!r}"
    if (isinstance(value, float) and math.isnan(value)) or value <= 0:
        return f"must be > 0 seconds, got {value!r}"
    return None if value <= _MOST_SECONDS else f"must be at most {_MOST_SECONDS:,} seconds"


def _instance_of(expected: type | tuple[type, ...], name: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if isinstance(value, expected) else f"expected {name}, got {value!r}"

    return check


def _sinks(value: object) -> str | None:
    if not isinstance(value, list | tuple) or not all(isinstance(s, LedgerSink) for s in value):
        return f"expected a list of ledger sinks (objects with emit()), got {value!r}"
    return None


def _tracer_provider(value: object) -> str | None:
    if callable(getattr(value, "get_tracer", None)):
        return None
    return f"expected an OpenTelemetry TracerProvider, got {value!r}"


def _budget(value: object) -> str | None:
    if isinstance(value, BudgetDecision) or callable(value):
        return None
    return f"expected a mesh.BudgetDecision or a callable returning one, got {value!r}"


def _callable(value: object) -> str | None:
    return None if callable(value) else f"expected a callable, got {type(value).__name__}"


def _heartbeat_timeout(value: object) -> str | None:
    if (problem := _seconds(value)) is not None:
        return problem
    least = MIN_HEARTBEAT_TIMEOUT
    return None if value >= least else f"must be at least {least} seconds, got {value!r}"  # type: ignore[operator]


def _retry(value: object) -> str | None:
    try:
        checked_retry(value)
    except InputError as error:
        return error.message
    return None


def _estimates(value: object) -> str | None:
    try:
        checked_estimates(value)
    except InputError as error:
        return error.message
    return None


# mesh's own keys in a repository run's stored configuration: extra_config may not touch them.
_OWN_KEYS: Final = frozenset(
    {
        *STORED_OPTIONS,
        "plan",
        "repo",
        "workspaces",
        "delivery_mode",
        "target",
        "roles",
        "estimates",
        "retry",
    }
)


def _extra_config(value: object) -> str | None:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        return f"expected a mapping of text keys to JSON values, got {type(value).__name__}"
    if taken := sorted(_OWN_KEYS.intersection(value)):
        return f"{', '.join(map(repr, taken))}: mesh's own keys in the run store"
    try:
        json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        return f"not JSON: {error}"
    return None


def _path_problem(path: object) -> str | None:
    """Why ``path`` cannot name a folder (None: it can)."""
    if not isinstance(path, str | os.PathLike):
        return f"expected a path, got {path!r}"
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        return f"expected a folder, got {text!r}"
    return f"a path has no NUL character, got {text!r}" if "\0" in text else None


# What each option must be (None, where the option allows it, means the default).
_CHECKS: Final[Mapping[str, Callable[[object], str | None]]] = {
    "budget": _budget,
    "max_attempts": _whole(1),
    "call_timeout": _seconds,
    "lease_ttl": _seconds,
    "clean_stretch": _whole(1),
    "clock": _instance_of(Clock, "a mesh.Clock"),
    "sinks": _sinks,
    "on_event": _callable,
    "run_id": _instance_of(str, "text"),
    "executor": _instance_of(Executor, "a mesh.Executor"),
    "estimates": _estimates,
    "retry": _retry,
    "heartbeat_timeout": _heartbeat_timeout,
    "delivery_mode": _instance_of(DeliveryMode, "a mesh.DeliveryMode"),
    "default_proof_command": _instance_of(str, "text"),
    "strict": _instance_of(bool, "True or False"),
    "max_threads": _whole(1),
    "ledger_path": _instance_of((str, os.PathLike), "a path"),
    "branch": _instance_of(str, "text"),
    "proof_timeout": _seconds,
    "pool_size": _whole(0),
    "workspaces": _path_problem,
    "sandbox": _instance_of(Sandbox, "a mesh.Sandbox"),
    "extra_config": _extra_config,
    "tracer_provider": _tracer_provider,
}
# Options that say something when None (no limit); the others' None is their default.
_NONE_MEANS_SOMETHING: Final = frozenset({"call_timeout"})
_NEVER_NONE: Final = frozenset(
    {
        "max_attempts",
        "lease_ttl",
        "clean_stretch",
        "sinks",
        "strict",
        "max_threads",
        "proof_timeout",
        "pool_size",
    }
)


def _checked_options(
    options: Mapping[str, object], allowed: frozenset[str], what: str
) -> dict[str, object]:
    """
    The options given, without those left at None (the default), checked.

    Unknown options and options of the wrong type or value are said all at once,
    before anything runs (no folder, store or workspace is made for a run that
    would stop on one).
    """
    problems = []
    for name, value in options.items():
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            also = (_MEMORY | _REPOSITORY | _RESUME) - allowed
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f" ({what} does not take it)"
                if name in also
                else ""
            )
            problems.append(f"{name}: unknown option{hint}")
            continue
        if value is None:
            if name in _NEVER_NONE:
                problems.append(f"{name}: has no None; leave it out for the default")
            continue
        if (problem := _CHECKS[name](value)) is not None:
            problems.append(f"{name}: {problem}")
    if problems:
        raise ValidationError("options", problems)
    return {
        name: value
        for name, value in options.items()
        if value is not None or name in _NONE_MEANS_SOMETHING
    }


@overload
async def run_async(
    plan: _PlanInput,
    *,
    roles: Roles,
    repo: None = None,
    out: None = None,
    **options: Unpack[MemoryOptions],
) -> RunResult: ...


@overload
async def run_async(
    plan: _PlanInput,
    *,
    roles: Roles,
    repo: str | os.PathLike[str],
    out: str | os.PathLike[str],
    **options: Unpack[RepositoryOptions],
) -> RepositoryRun: ...


async def run_async(
    plan: _PlanInput,
    *,
    roles: Roles,
    repo: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    **options: Any,
) -> RunResult | RepositoryRun:
    """
    Run ``plan`` to the end, from async code (`run` is the same from sync code).

    Without ``repo``, the ``roles`` run the plan in memory and a `RunResult`
    comes back. With ``repo`` and ``out``, the plan runs on that git
    repository: candidates in their own workspaces, proofs there, delivery by
    mesh's integrator (patches in ``out/patches``, or commits for
    ``commit_first`` units), every event in the run store ``out/run.sqlite``;
    a `RepositoryRun` comes back, and a run that stopped (a crash, Ctrl-C, a
    kill) continues with `resume`. On a repository only ``roles.coder`` is
    needed: every role left unset is played by mesh's own adapter.

    Args:
        plan: A `Plan`, an update_plan payload, a units document, or `Unit` records.
        roles: The role adapters (`Roles`).
        repo: The git repository to run on.
        out: The run's folder (store, ledger, plan state, patches); needs ``repo``.
        **options: `EngineOptions` (and `MemoryOptions` or `RepositoryOptions`).

    Raises:
        ValidationError: The roles or options are wrong (every problem at once).
        PlanError: The plan is malformed.
        RunOwned: Another process is running in ``out``.

    .. versionadded:: 0.1.0
    """
    return await _run_anywhere(plan, roles=roles, repo=repo, out=out, options=options)


async def _run_anywhere(
    plan: object,
    *,
    roles: Roles,
    repo: str | os.PathLike[str] | None,
    out: str | os.PathLike[str] | None,
    options: Mapping[str, object],
) -> RunResult | RepositoryRun:
    for name, path in (("repo", repo), ("out", out)):
        if path is not None and (problem := _path_problem(path)):
            raise ValidationError("options", [f"{name}: {problem}"])
    if (repo is None) != (out is None):
        missing, given = ("out", "repo") if out is None else ("repo", "out")
        raise OptionError(
            "MissingRequiredOption", f"{given} needs {missing}: a repository run keeps its files"
        )
    if repo is None or out is None:
        checked = _checked_options(options, _MEMORY, "a run in memory")
        return await _run_in_memory(plan, roles=roles, options=checked)
    checked = _checked_options(options, _REPOSITORY, "a repository run")
    return await start_repository_run(plan, repo=repo, out=out, roles=roles, options=checked)


async def _run_in_memory(plan: object, *, roles: Roles, options: Mapping[str, Any]) -> RunResult:
    engine = {
        key: value
        for key, value in options.items()
        if key not in {"on_event", "delivery_mode", "default_proof_command", "sinks"}
    }
    sinks: list[LedgerSink] = list(options.get("sinks", ()))
    if (on_event := options.get("on_event")) is not None:
        sinks.append(CallbackSink(on_event))
    async with Orchestrator(roles=roles, sinks=sinks, **engine) as orchestrator:
        return await orchestrator.execute(
            plan,
            delivery_mode=options.get("delivery_mode"),
            default_proof_command=options.get("default_proof_command"),
        )


async def resume_async(
    out: str | os.PathLike[str], *, roles: Roles, **options: Unpack[ResumeOptions]
) -> RepositoryRun:
    """
    Continue a repository run that stopped (a crash, Ctrl-C, a kill, a reboot).

    ``out`` is the run's folder (or its ``run.sqlite``). Completed and failed
    units keep their outcome; units in flight restart at their recorded
    attempt, proving recorded candidates again or writing new ones; a
    delivery that had started is checked against the repository, so nothing
    is delivered twice. Give the same roles as the first time (adapters
    cannot be stored; a role played by another kind of adapter is refused).
    A call of an adapter declared `not_rerun_safe` that a crash interrupted
    is not made again: its unit fails with evidence naming it. The options
    the run started with (timeouts, attempts, branch, ...) come from its store.

    .. versionadded:: 0.1.0
    """
    if problem := _path_problem(out):
        raise ValidationError("options", [f"out: {problem}"])
    checked = _checked_options(options, _RESUME, "a resume")
    return await resume_repository_run(out, roles=roles, options=checked)


@overload
def run(
    plan: _PlanInput,
    *,
    roles: Roles,
    repo: None = None,
    out: None = None,
    backend: Backend = "asyncio",
    **options: Unpack[MemoryOptions],
) -> RunResult: ...


@overload
def run(
    plan: _PlanInput,
    *,
    roles: Roles,
    repo: str | os.PathLike[str],
    out: str | os.PathLike[str],
    backend: Backend = "asyncio",
    **options: Unpack[RepositoryOptions],
) -> RepositoryRun: ...


def run(
    plan: _PlanInput,
    *,
    roles: Roles,
    repo: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    backend: Backend = "asyncio",
    **options: Any,
) -> RunResult | RepositoryRun:
    """
    Run ``plan`` to the end from synchronous code (scripts; notebooks use `run_async`).

    The same as `run_async` (see there for every argument), on ``backend``
    (``asyncio`` or ``trio``). Inside a running event loop (a Jupyter
    notebook, an async function) it refuses with a hint: ``await
    mesh.run_async(...)`` there. Ctrl-C during a repository run raises
    `KeyboardInterrupt` with a note saying how to continue the run.

    .. versionadded:: 0.1.0
    """
    _check_backend(backend)

    async def main() -> RunResult | RepositoryRun:
        return await _run_anywhere(plan, roles=roles, repo=repo, out=out, options=options)

    return _run_sync(main, backend=backend, out=out, what="mesh.run", twin="mesh.run_async")


def resume(
    out: str | os.PathLike[str],
    *,
    roles: Roles,
    backend: Backend = "asyncio",
    **options: Unpack[ResumeOptions],
) -> RepositoryRun:
    """
    `resume_async` from synchronous code, on ``backend`` (``asyncio`` or ``trio``).

    .. versionadded:: 0.1.0
    """
    _check_backend(backend)

    async def main() -> RepositoryRun:
        return await resume_async(out, roles=roles, **options)

    return _run_sync(main, backend=backend, out=out, what="mesh.resume", twin="mesh.resume_async")


_BACKENDS: Final = ("asyncio", "trio")


def _check_backend(backend: object) -> None:
    if backend not in _BACKENDS:
        raise OptionError(
            "InvalidOptionValue", f"backend must be 'asyncio' or 'trio', got {backend!r}"
        )
    if backend == "trio":
        try:
            import trio  # noqa: F401, PLC0415 - only to say it is missing, here
        except ImportError:
            raise MeshError(
                "backend 'trio' needs trio, which is not installed", hint="pip install trio"
            ) from None


def _running_loop() -> str | None:
    """The async library running in this thread, if any (then a new loop cannot start)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return None
        return "trio"
    return None


def _run_sync(
    main: Callable[[], Awaitable[T]],
    *,
    backend: str,
    out: str | os.PathLike[str] | None,
    what: str,
    twin: str,
) -> T:
    if (library := _running_loop()) is not None:
        raise MeshError(
            f"{what}() cannot start an event loop here: {library} is already running one "
            "(a notebook, or async code)",
            hint=f"use `await {twin}(...)` instead, with the same arguments",
        )
    try:
        return run_to_result(main, backend=backend)
    except BaseException as stopped:
        interrupt = ctrl_c(stopped)
        if interrupt is None:
            raise
        if out is not None and _holds_a_run(Path(out)):
            interrupt.add_note(
                f"The run stopped; its state is kept in {Path(out)}. Continue it with "
                f"mesh.resume({str(Path(out))!r}, roles=...), with the same roles."
            )
        if interrupt is stopped:
            raise
        raise interrupt from None


def _holds_a_run(out: Path) -> bool:
    """Whether ``out`` (a run's folder or its store) has a run to resume."""
    return out.is_file() or (out / STORE_FILE).is_file()


def ctrl_c(stopped: BaseException) -> KeyboardInterrupt | None:
    """
    The Ctrl-C that stopped a run, as one `KeyboardInterrupt` (None: something else did).

    On trio it can come out of the run's task groups inside an exception group;
    a caller's ``except KeyboardInterrupt`` should catch it all the same.
    """
    if isinstance(stopped, KeyboardInterrupt):
        return stopped
    if isinstance(stopped, BaseExceptionGroup):
        matched, rest = stopped.split(KeyboardInterrupt)
        if matched is not None and rest is None:
            interrupt = KeyboardInterrupt()
            interrupt.__context__ = stopped
            return interrupt
    return None
