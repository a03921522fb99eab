"""
The streaming scheduler: units start the moment their dependencies complete.

Structure: `Orchestrator.execute` owns one task group. A dispatcher loop admits
ready units while the concurrency limit allows (the budget's target, lowered by
backpressure); each admitted unit runs its whole lifecycle in its own task,
the only writer of its `UnitProgress`. Adapter calls go through `_call`, which
applies the per-call timeout, one retry and one replacement, parses the answer
strictly and feeds backpressure. Every transition and call is one ledger event.
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar, final

import anyio
import attrs

from ..contracts._clock import Clock, SystemClock
from ..contracts._contract import worker_result_document
from ..contracts._enums import Decision, DeliveryMode, FailureCode, Lane, ProofStatus
from ..contracts._errors import (
    FileAccessError,
    InputError,
    InvalidOutputSchema,
    MeshError,
    RunFailed,
    UnitFailed,
)
from ..contracts._events import JsonLinesSink, Ledger, LedgerEvent, LedgerSink
from ..contracts._records import BudgetDecision, Plan, Unit, WorkerResult
from ..contracts._scopes import scopes_overlap
from ..planning._budget import MAX_TRIPLET_WIDTH, budget_policy
from ..planning._plan import (
    check_dependencies,
    check_plan,
    check_units,
    parse_plan,
    parse_units,
    slice_plan,
)
from ._executors import BoundCall, Executor, ExecutorInfo, LocalExecutor, Placed, executor_slots
from ._governor import Backpressure
from ._lifecycle import (
    Trigger,
    UnitProgress,
    UnitState,
    attempts_remain,
    enough_candidates,
)
from ._machine import UnitMachine
from ._roles import (
    AdjudicationRequest,
    ApplyRequest,
    AuthorRequest,
    DeliveryRequest,
    LeaseRequest,
    LeaseTable,
    ProofRequest,
    Roles,
    check_result,
)
from ._summary import MetricsCollector, RunMetrics, UnitOutcome, pick_learning, render_ledger

__all__ = ["Orchestrator", "RunResult", "RunStatistics", "append_learning", "run"]

T = TypeVar("T")
BudgetProvider = Callable[[], BudgetDecision | Awaitable[BudgetDecision]]
"""Returns the current budget decision; called again during the run."""

_MACHINE: Final = UnitMachine()
_AUTHOR_LANES: Final = (Lane.CODER, Lane.CODER, Lane.REDUCER)
_MAX_CALLS: Final = 3  # the call, one retry, one replacement


@attrs.frozen(kw_only=True)
class _CallFailure:
    """Why an adapter call produced no usable result."""

    code: FailureCode
    evidence: str


class _TimedOut(Exception):
    pass


@attrs.define
class _Holder:
    """A unit at work and the leases it holds, which the renewer keeps alive meanwhile."""

    progress: UnitProgress
    leases: dict[str, None]
    work: anyio.CancelScope
    lost: str | None = None


@attrs.frozen(kw_only=True)
class UnitCheckpoint:
    """
    Where one unit stood when its run stopped: what `Orchestrator.execute` resumes from.

    A unit with an ``outcome`` is finished and is not run again. Otherwise it
    restarts at ``attempt`` from the furthest stage it recorded: with
    ``candidates`` but no ``proofs``, the candidates are proved again instead
    of being written again; with ``proofs`` too, they are adjudicated again;
    with an ``accepted`` candidate (its delivery had started), that candidate
    is delivered again with the same idempotency key, which the integrator
    checks against what it already delivered.

    .. versionadded:: 0.1.0
    """

    unit_id: str
    attempt: int = 1
    candidates: tuple[WorkerResult, ...] = ()
    proofs: Mapping[str, WorkerResult | None] = attrs.field(factory=dict)
    """The final proof record of every candidate (None: its patch did not apply)."""
    accepted: str | None = None
    """The candidate whose delivery had started."""
    approvals: int = 0
    """The fixer approvals of ``accepted``."""
    outcome: UnitOutcome | None = None


@attrs.frozen(kw_only=True)
class ResumePoint:
    """
    A stopped run's state: one checkpoint per unit that had started, and the next event number.

    .. versionadded:: 0.1.0
    """

    checkpoints: Mapping[str, UnitCheckpoint] = attrs.field(factory=dict)
    next_seq: int = 1
    history: Sequence[LedgerEvent] = ()
    """The events recorded so far: the resumed run's metrics count them too."""


@attrs.frozen(kw_only=True)
class RunStatistics:
    """
    A snapshot of a run in progress (see `Orchestrator.statistics`).

    .. versionadded:: 0.1.0
    """

    run_id: str
    units_total: int
    finished: int
    in_flight: int
    ready: int
    by_state: Mapping[str, int] = attrs.field(hash=False)
    limit: int
    target: int
    serialize_overlaps: bool


@attrs.frozen(kw_only=True)
class RunResult:
    """
    What a run produced: one outcome per unit (plan order), metrics and plan state.

    .. versionadded:: 0.1.0
    """

    run_id: str
    outcomes: tuple[UnitOutcome, ...]
    metrics: RunMetrics
    plan_state: Mapping[str, Any] = attrs.field(hash=False)
    """The update_plan document as the integrator last wrote it."""

    def _with_state(self, state: str) -> tuple[UnitOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.state == state)

    @property
    def completed(self) -> tuple[UnitOutcome, ...]:
        """Units delivered."""
        return self._with_state("completed")

    @property
    def failed(self) -> tuple[UnitOutcome, ...]:
        """Units that ended failed, each with one failure code."""
        return self._with_state("failed")

    @property
    def blocked(self) -> tuple[UnitOutcome, ...]:
        """Units never started because a dependency failed."""
        return self._with_state("blocked")

    def outcome(self, unit_id: str) -> UnitOutcome:
        """The outcome of one unit."""
        for outcome in self.outcomes:
            if outcome.unit_id == unit_id:
                return outcome
        raise KeyError(unit_id)

    def ledger(self) -> str:
        """The prose "Orchestration Ledger" (empty when nothing ran)."""
        return render_ledger(self.metrics, self.outcomes)

    def learning(self) -> str | None:
        """One reusable lesson from this run."""
        return pick_learning(self.metrics, self.outcomes)

    def check(self) -> None:
        """Raise `RunFailed` (an ExceptionGroup of `UnitFailed`) unless every unit completed."""
        problems = [
            UnitFailed(
                o.unit_id,
                o.failure_code or FailureCode.REQUIRES_CLARIFICATION,
                o.evidence or f"blocked by {o.blocked_by}",
            )
            for o in self.outcomes
            if o.state != "completed"
        ]
        if problems:
            raise RunFailed(
                f"{len(problems)} of {len(self.outcomes)} units did not complete", problems
            )


def append_learning(
    result: RunResult, path: str | os.PathLike[str] = ".learnings.jsonl"
) -> str | None:
    """
    Append the run's one learning to a JSON-lines file; returns it (None: nothing ran).

    .. versionadded:: 0.1.0
    """
    learning = result.learning()
    if learning is None:
        return None
    line = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": "mesh",
        "run_id": result.run_id,
        "learning": learning,
        "metrics": {
            "completed": result.metrics.completed,
            "failed": result.metrics.failed,
            "blocked": result.metrics.blocked,
            "units_per_hour": round(result.metrics.units_per_hour, 3),
            "proof_fail_rate": round(result.metrics.proof_fail_rate, 3),
            "reject_rate": round(result.metrics.reject_rate, 3),
            "scope_conflict_requeue_rate": round(result.metrics.scope_conflict_requeue_rate, 3),
        },
    }
    try:
        with Path(path).open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(line, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise FileAccessError(
            f"cannot append learning to {os.fspath(path)}: {exc.strerror}"
        ) from None
    return learning


def _plan_units(plan: Plan | Sequence[Unit] | object) -> tuple[tuple[Unit, ...], Plan | None]:
    # Every plan form is checked here, before anything runs: records built in
    # Python carry author text too, and attrs does not look at it.
    if isinstance(plan, Plan):
        check_plan(plan)
        return slice_plan(plan).units, plan
    if isinstance(plan, list | tuple) and plan and all(isinstance(u, Unit) for u in plan):
        units = tuple(plan)
        check_units(units)
        return units, None
    if isinstance(plan, Mapping) and "units" in plan:
        units = parse_units(plan)
        check_dependencies((u.id, u.deps, f"unit {u.id}") for u in units)
        return units, None
    parsed = parse_plan(plan)
    return slice_plan(parsed).units, parsed


def _initial_plan_state(units: Sequence[Unit], plan: Plan | None) -> dict[str, Any]:
    if plan is None:
        steps: list[dict[str, object]] = [
            {"id": u.id, "step": u.objective, "status": "pending"} for u in units
        ]
        return {"plan": steps}
    steps = [
        {
            k: v
            for k, v in (("id", s.id), ("step", s.objective), ("status", s.status))
            if v is not None
        }
        for s in plan.steps
    ]
    document: dict[str, object] = {"plan": steps}
    if plan.explanation is not None:
        document = {"explanation": plan.explanation, **document}
    return document


def _with_completed(plan_state: dict[str, Any], steps: Sequence[int]) -> dict[str, Any]:
    """``plan_state`` with these steps marked completed (the steps are replaced, not changed)."""
    if not steps:
        return plan_state
    marked = list(plan_state["plan"])
    for index in steps:
        marked[index] = {**marked[index], "status": "completed"}
    return {**plan_state, "plan": marked}


def _step_index(units: Sequence[Unit], plan: Plan | None) -> dict[str, int]:
    if plan is None:
        return {u.id: index for index, u in enumerate(units)}
    sliced = [i for i, step in enumerate(plan.steps) if step.status in {"pending", "in_progress"}]
    return {unit.id: sliced[index] for index, unit in enumerate(units)}


@final
class Orchestrator:
    """
    Runs plans: streaming units through candidates, proofs, quorum and delivery.

    Use it as an async context manager::

        async with mesh.Orchestrator(roles=roles, budget=decision) as run:
            result = await run.execute(plan)

    Args:
        roles: The role adapters. Without a locksmith, an in-process `LeaseTable` is used.
        budget: A `BudgetDecision`, or a callable returning one (sync or async),
            re-read during the run. Default: no clamp, ``max_threads`` units.
        max_threads: Upper bound for the default budget.
        max_attempts: Attempts per unit (rework starts the next one).
        call_timeout: Seconds an adapter call may take (None: no limit).
        lease_ttl: Seconds a write-scope lease lives without renewal.
        clean_stretch: Clean units in a row that restore the target after backpressure.
        clock: Where time comes from (default: the event loop's clock).
        sinks: Ledger sinks receiving every event.
        ledger_path: Also write the ledger as JSON lines to this file.
        run_id: Names the run (default: a fresh random id).
        executor: Where adapter calls run (default: `LocalExecutor`, this
            process); e.g. `RayExecutor` for a Ray cluster.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        roles: Roles,
        budget: BudgetDecision | BudgetProvider | None = None,
        max_threads: int = 12,
        max_attempts: int = 2,
        call_timeout: float | None = 600.0,
        lease_ttl: float = 900.0,
        clean_stretch: int = 3,
        clock: Clock | None = None,
        sinks: Sequence[LedgerSink] = (),
        ledger_path: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        executor: Executor | None = None,
    ) -> None:
        if max_attempts < 1:
            raise InputError(f"max_attempts must be >= 1, got {max_attempts}")
        if call_timeout is not None and call_timeout <= 0:
            raise InputError(f"call_timeout must be > 0 seconds, got {call_timeout}")
        self._clock: Clock = clock or SystemClock()
        locksmith = roles.locksmith
        if locksmith is None:
            locksmith = LeaseTable(clock=self._clock)
            roles = attrs.evolve(roles, locksmith=locksmith)
        elif isinstance(locksmith, LeaseTable):
            locksmith.bind_clock(self._clock)
        self._roles = roles
        if executor is not None and not isinstance(executor, Executor):
            raise InputError(
                f"executor must provide start, bind and stop, got {type(executor).__name__}"
            )
        self._executor: Executor = executor or LocalExecutor()
        # Bound by the executor when a run starts: which adapter plays a lane, and where.
        self._adapters: dict[Lane, BoundCall] = {}
        self._replacements: dict[Lane, BoundCall] = {}
        self._budget_source = budget or budget_policy(
            remaining_five_hour=100, remaining_weekly=100, max_threads=max_threads
        )
        self._max_attempts = max_attempts
        self._timeout = call_timeout
        self._lease_ttl_ms = max(1, round(lease_ttl * 1000))
        self._clean_stretch = clean_stretch
        self._sinks = tuple(sinks)
        self._ledger_path = ledger_path
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._entered = False
        self._executing = False
        self._reset()

    def _reset(self) -> None:
        self._progress: dict[str, UnitProgress] = {}
        """Units in flight; a finished unit leaves only its outcome and a count."""
        self._ended_by_state: dict[str, int] = {}
        self._outcomes: dict[str, UnitOutcome] = {}
        self._active: dict[str, Unit] = {}
        self._ready: list[tuple[int, str]] = []
        self._changed = anyio.Event()
        self._lease_released = anyio.Event()
        self._holders: dict[str, _Holder] = {}
        self._lease_granted = anyio.Event()
        # One delivery at a time: each builds on the plan state the previous one wrote.
        self._delivery_lock = anyio.Lock()
        self._budget: BudgetDecision | None = None
        self._governor = Backpressure(target=1, clean_stretch=self._clean_stretch)
        self._signals: dict[str, int] = {}

    async def __aenter__(self) -> Orchestrator:
        self._entered = True
        self._file_sink = JsonLinesSink(self._ledger_path) if self._ledger_path else None
        return self

    async def __aexit__(self, *_: object) -> None:
        self._entered = False
        if self._file_sink is not None:
            self._file_sink.close()

    # -- observing ---------------------------------------------------------------

    def statistics(self) -> RunStatistics:
        """A snapshot of the run in progress (safe to call at any time)."""
        by_state = dict(self._ended_by_state)
        for progress in self._progress.values():
            by_state[progress.state] = by_state.get(progress.state, 0) + 1
        return RunStatistics(
            run_id=self.run_id,
            units_total=len(getattr(self, "_units", ())),
            finished=len(self._outcomes),
            in_flight=len(self._active),
            ready=len(self._ready),
            by_state=by_state,
            limit=self._governor.limit,
            target=self._governor.target,
            serialize_overlaps=self._governor.serialize_overlaps,
        )

    # -- running -----------------------------------------------------------------

    async def execute(
        self,
        plan: Plan | Sequence[Unit] | object,
        *,
        delivery_mode: DeliveryMode | None = None,
        default_proof_command: str | None = None,
        resume: ResumePoint | None = None,
    ) -> RunResult:
        """
        Run every unit of ``plan`` to completed, failed or blocked.

        Args:
            plan: A `Plan`, an update_plan payload, a units document, or `Unit` records.
            delivery_mode: Deliver every unit this way (default: each unit's own).
            default_proof_command: The proof of units that name none.
            resume: Continue a stopped run: finished units keep their outcome,
                the others restart from their checkpoint (see `UnitCheckpoint`).

        Returns:
            The run's outcomes, metrics and plan state. Unit failures do not
            raise; call `RunResult.check` for that.

        Raises:
            ValidationError, PlanError: When the plan is malformed.
            MeshError: When used outside ``async with`` or concurrently.
        """
        if not self._entered:
            raise MeshError("use `async with Orchestrator(...) as run:` before run.execute()")
        if self._executing:
            raise MeshError("this orchestrator is already executing a plan")
        units, plan_record = _plan_units(plan)
        if delivery_mode is not None or default_proof_command:
            units = tuple(
                attrs.evolve(
                    unit,
                    delivery_mode=delivery_mode or unit.delivery_mode,
                    proof_command=unit.proof_command or default_proof_command or "",
                )
                for unit in units
            )
        self._executing = True
        self._reset()
        self._units = units
        self._index = {unit.id: index for index, unit in enumerate(units)}
        self._plan_state = _initial_plan_state(units, plan_record)
        self._step_of = _step_index(units, plan_record)
        metrics = MetricsCollector()
        for event in (resume or ResumePoint()).history:
            metrics.emit(event)
        sinks = [metrics, *self._sinks, *((self._file_sink,) if self._file_sink else ())]
        self._resume = resume or ResumePoint()
        # Units that completed before a restart stay completed in the plan state written next.
        self._plan_state = _with_completed(
            self._plan_state,
            [
                self._step_of[unit_id]
                for unit_id, checkpoint in self._resume.checkpoints.items()
                if checkpoint.outcome is not None
                and checkpoint.outcome.state == "completed"
                and unit_id in self._step_of
            ],
        )
        self._ledger = Ledger(
            run_id=self.run_id,
            sinks=sinks,
            now=self._clock.current_time,
            first_seq=self._resume.next_seq,
        )
        try:
            await self._open_executor()
            try:
                await self._run_all(units)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._executor.stop()
        finally:
            self._executing = False
        self._ledger.emit(
            "run_finished",
            completed=sum(o.state == "completed" for o in self._outcomes.values()),
            failed=sum(o.state == "failed" for o in self._outcomes.values()),
            blocked=sum(o.state == "blocked" for o in self._outcomes.values()),
        )
        return RunResult(
            run_id=self.run_id,
            outcomes=tuple(self._outcomes[u.id] for u in units),
            metrics=metrics.metrics(),
            plan_state=self._plan_state,
        )

    async def _open_executor(self) -> None:
        """Start the executor and bind every adapter to it, before any unit runs."""
        info: object = await self._executor.start()
        if not isinstance(info, ExecutorInfo):
            with anyio.CancelScope(shield=True):
                await self._executor.stop()
            raise InputError(
                f"the executor's start() returned {type(info).__name__}, not ExecutorInfo"
            )
        try:
            roles = self._roles
            self._adapters = {
                lane: self._executor.bind(lane, roles.for_lane(lane))
                for lane in Lane
                if lane is not Lane.REDUCER or roles.reducer is not None
            }
            self._replacements = {
                lane: self._executor.bind(lane, adapter)
                for lane, adapter in roles.replacements.items()
            }
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._executor.stop()
            raise
        self._executor_info = info
        self._saturated = False
        self._slots: anyio.CapacityLimiter | None = None
        if info.remote_lanes and info.max_slots is not None:
            self._slots = anyio.CapacityLimiter(_gated_slots(info, info.max_slots, allowed=False))

    def _announce_executor(self) -> None:
        info = self._executor_info
        if info.remote_lanes:
            # Local runs say nothing: every call runs here, as the adapter_call events show.
            # The executor's own details first: they never replace what the engine records.
            self._ledger.emit(
                "executor_started",
                **{
                    **info.detail,
                    "executor": info.name,
                    "remote_lanes": sorted(lane.value for lane in info.remote_lanes),
                    "base_slots": info.base_slots,
                    "max_slots": info.max_slots,
                    "slots": self._slots.total_tokens if self._slots is not None else None,
                },
            )

    def _regate(self, reason: str) -> None:
        """Apply the scale-out gate to the executor's slots (see `executor_slots`)."""
        info, limiter = self._executor_info, self._slots
        if limiter is None or info.max_slots is None:
            return
        allowed = self._budget is not None and self._budget.cas_scaleout_allowed
        slots = _gated_slots(info, info.max_slots, allowed=allowed, saturated=self._saturated)
        if slots != limiter.total_tokens:
            limiter.total_tokens = slots
            self._ledger.emit(
                "executor_slots",
                slots=slots,
                base_slots=info.base_slots,
                max_slots=info.max_slots,
                scaleout_allowed=allowed,
                saturated=self._saturated,
                reason=reason,
            )

    async def _run_all(self, units: Sequence[Unit]) -> None:
        self._start(units)
        async with anyio.create_task_group() as group:
            group.start_soon(self._renew_leases)
            while True:
                await self._read_budget()
                while len(self._active) < self._governor.limit:
                    admitted = self._next_admissible()
                    if admitted is None:
                        break
                    self._active[admitted.id] = admitted
                    group.start_soon(self._run_unit, admitted)
                if len(self._outcomes) == len(units):
                    break
                await self._changed.wait()
                self._changed = anyio.Event()
            group.cancel_scope.cancel()  # the lease renewer: no unit is left to hold one

    def _start(self, units: Sequence[Unit]) -> None:
        """Dependencies, restored outcomes (when resuming) and the first ready units."""
        restored = {
            unit.id: checkpoint.outcome
            for unit in units
            if (checkpoint := self._resume.checkpoints.get(unit.id)) is not None
            and checkpoint.outcome is not None
        }
        if self._resume.next_seq > 1:
            self._ledger.emit("run_resumed", units=len(units), finished=len(restored))
        else:
            self._ledger.emit("run_started", units=len(units))
        self._announce_executor()
        self._outcomes.update(restored)
        for outcome in restored.values():
            if outcome.state == "blocked":
                self._ended("blocked")
        done = {unit_id for unit_id, o in restored.items() if o.state == UnitState.COMPLETED}
        self._waiting: dict[str, set[str]] = {}
        self._dependents: dict[str, list[str]] = {}
        for unit in units:
            self._waiting[unit.id] = set(unit.deps) - done
            for dep in unit.deps:
                self._dependents.setdefault(dep, []).append(unit.id)
        for unit in units:
            if unit.id in restored:
                continue
            # A dependency that is neither done nor in this run, or one that stopped before.
            cause = [
                dep for dep in self._waiting[unit.id] if dep not in self._index or dep in restored
            ]
            if cause:
                self._block(unit.id, min(cause))
            elif not self._waiting[unit.id]:
                heapq.heappush(self._ready, (self._index[unit.id], unit.id))

    def _notify(self) -> None:
        self._changed.set()

    def _next_admissible(self) -> Unit | None:
        skipped: list[tuple[int, str]] = []
        chosen: Unit | None = None
        while self._ready:
            entry = heapq.heappop(self._ready)
            unit = self._units[entry[0]]
            if self._governor.serialize_overlaps and any(
                scopes_overlap(unit.write_scope, other.write_scope)
                for other in self._active.values()
            ):
                skipped.append(entry)
                continue
            chosen = unit
            break
        for entry in skipped:
            heapq.heappush(self._ready, entry)
        return chosen

    async def _read_budget(self) -> None:
        source = self._budget_source
        if isinstance(source, BudgetDecision):
            decision = source
        else:
            answer = source()
            decision = await answer if isinstance(answer, Awaitable) else answer
            if not isinstance(decision, BudgetDecision):
                raise InputError(
                    f"the budget provider returned {type(decision).__name__}, not BudgetDecision"
                )
        if decision == self._budget:
            return
        first_read = self._budget is None
        self._budget = decision
        self._ledger.emit(
            "budget_read",
            target=decision.max_active_units,
            mode=decision.mode.value,
            strict_remaining=decision.remaining_strict,
            triplet_width=decision.triplet_width,
            cas_scaleout_allowed=decision.cas_scaleout_allowed,
        )
        if first_read:
            self._governor = Backpressure(
                target=decision.max_active_units, clean_stretch=self._clean_stretch
            )
        elif self._governor.retarget(decision.max_active_units):
            self._concurrency_changed("budget")
        self._regate("budget")

    def _concurrency_changed(self, reason: str) -> None:
        governor = self._governor
        self._ledger.emit(
            "concurrency_changed",
            limit=governor.limit,
            target=governor.target,
            reason=reason,
            serialize_overlaps=governor.serialize_overlaps,
        )
        self._notify()

    def _signal(self, unit_id: str) -> None:
        """A reject, timeout, schema failure or aborted call: backpressure."""
        self._signals[unit_id] = self._signals.get(unit_id, 0) + 1
        was_serializing = self._governor.serialize_overlaps
        if self._governor.signal() or not was_serializing:
            self._concurrency_changed("backpressure")

    @property
    def _width(self) -> int:
        width = self._budget.triplet_width if self._budget else MAX_TRIPLET_WIDTH
        return min(width, MAX_TRIPLET_WIDTH if self._roles.reducer is not None else 2)

    # -- one unit ----------------------------------------------------------------

    async def _run_unit(self, unit: Unit) -> None:
        progress = UnitProgress(unit=unit, max_attempts=self._max_attempts, width=self._width)
        checkpoint = self._resume.checkpoints.get(unit.id)
        if checkpoint is not None:
            progress.attempt = checkpoint.attempt
            progress.candidates = list(checkpoint.candidates)
        self._progress[unit.id] = progress
        self._ledger.emit("unit_started", unit_id=unit.id, attempt=progress.attempt)
        leases: dict[str, None] = {}
        holder = self._holders[unit.id] = _Holder(
            progress=progress, leases=leases, work=anyio.CancelScope()
        )
        try:
            with holder.work:
                await self._drive(progress, leases)
            if holder.work.cancelled_caught and holder.lost is not None:
                # The renewer stopped the work: another unit may be writing its scope now.
                self._fail(progress, FailureCode.SCOPE_OVERLAP_CONFLICT, holder.lost)
        finally:
            del self._holders[unit.id]
            with anyio.CancelScope(shield=True):
                await self._release(progress, leases)
            del self._active[unit.id]
            # Keeping every finished unit's evidence would make the heap, and each
            # full garbage collection, grow with the plan.
            del self._progress[unit.id]
        self._finish(progress)

    def _fire(self, progress: UnitProgress, trigger: Trigger) -> None:
        before, after = _MACHINE.fire(progress, trigger)
        self._ledger.emit(
            "unit_transition",
            unit_id=progress.unit.id,
            attempt=progress.attempt,
            trigger=trigger.value,
            from_state=before.value,
            to_state=after.value,
        )

    def _fail(self, progress: UnitProgress, code: FailureCode, evidence: str) -> None:
        progress.failure_code = code
        progress.evidence = evidence or code.value
        self._fire(progress, Trigger.FAIL)

    def _rework_or_fail(self, progress: UnitProgress, code: FailureCode, evidence: str) -> bool:
        """Start the next attempt if one remains (True), else fail the unit (False)."""
        if attempts_remain(progress):
            self._fire(progress, Trigger.REWORK)
            progress.start_next_attempt()
            self._ledger.emit(
                "rework",
                unit_id=progress.unit.id,
                attempt=progress.attempt,
                reason=code.value,
                evidence=evidence,
            )
            return True
        self._fail(progress, code, evidence)
        return False

    async def _drive(self, progress: UnitProgress, leases: dict[str, None]) -> None:
        # A restart picks a unit up at the furthest stage its events recorded.
        checkpoint = self._resume.checkpoints.get(progress.unit.id)
        resumed = checkpoint if checkpoint is not None and checkpoint.candidates else None
        while await self._attempt(progress, leases, resumed):
            resumed = None

    async def _attempt(
        self, progress: UnitProgress, leases: dict[str, None], resumed: UnitCheckpoint | None
    ) -> bool:
        """Run one attempt of a unit: True when it ended in rework (run the next one)."""
        progress.width = self._width
        failure = None if resumed else await self._generate(progress)
        if not enough_candidates(progress):
            return self._end_attempt(
                progress,
                failure
                or _CallFailure(
                    code=FailureCode.REQUIRES_CLARIFICATION,
                    evidence="the authors produced too few candidates",
                ),
            )
        self._fire(progress, Trigger.CANDIDATES_GENERATED)
        if resumed is None:
            self._ledger.emit(
                "candidates_recorded",
                unit_id=progress.unit.id,
                attempt=progress.attempt,
                candidates=[worker_result_document(c) for c in progress.candidates],
            )
        failures = await self._proofs(progress, leases, resumed)
        if isinstance(failures, _CallFailure):
            return self._end_attempt(progress, failures)
        self._fire(progress, Trigger.PROOFS_RECORDED)
        proven = tuple(
            (c, proof)
            for c in progress.candidates
            if (proof := progress.proofs.get(c.candidate_id)) is not None
            and proof.proof_status is ProofStatus.PASS
        )
        if not proven:
            return self._end_attempt(progress, self._no_proof_reason(progress, failures))
        verdict = self._recorded_verdict(progress, proven, resumed) or await self._adjudicate(
            progress, proven
        )
        if isinstance(verdict, _CallFailure):
            return self._end_attempt(
                progress, verdict, rework=verdict.code is not FailureCode.SAFETY_REGRESSION_RISK
            )
        self._fire(progress, Trigger.QUORUM_REACHED)
        delivery = await self._deliver(progress, verdict)
        if isinstance(delivery, _CallFailure):
            return self._end_attempt(progress, delivery, rework=False)
        progress.delivery = delivery
        self._fire(progress, Trigger.DELIVERED)
        return False

    def _end_attempt(
        self, progress: UnitProgress, failure: _CallFailure, *, rework: bool = True
    ) -> bool:
        """End an attempt that failed: rework when allowed and attempts remain (True), else fail."""
        if rework:
            return self._rework_or_fail(progress, failure.code, failure.evidence)
        self._fail(progress, failure.code, failure.evidence)
        return False

    async def _proofs(
        self, progress: UnitProgress, leases: dict[str, None], resumed: UnitCheckpoint | None
    ) -> list[_CallFailure] | _CallFailure:
        """Prove every candidate, or take the proofs a stopped run recorded; the call failures."""
        if resumed is not None and resumed.proofs:
            progress.proofs = dict(resumed.proofs)
            # The proofs stand; the lease they were made under died with its process.
            lease = await self._acquire(progress, f"{progress.unit.id}-resumed", leases)
            return lease if isinstance(lease, _CallFailure) else []
        failures = await self._prove_all(progress, leases)
        self._ledger.emit(
            "proofs_recorded",
            unit_id=progress.unit.id,
            attempt=progress.attempt,
            proofs={
                cid: None if proof is None else worker_result_document(proof)
                for cid, proof in progress.proofs.items()
            },
        )
        return failures

    @staticmethod
    def _recorded_verdict(
        progress: UnitProgress,
        proven: tuple[tuple[WorkerResult, WorkerResult], ...],
        resumed: UnitCheckpoint | None,
    ) -> str | None:
        """The candidate a stopped run had started delivering, when its quorum still holds."""
        if resumed is None or resumed.accepted is None or resumed.approvals < progress.quorum:
            return None
        if resumed.accepted not in {c.candidate_id for c, _ in proven}:
            return None
        progress.accepted = resumed.accepted
        progress.approvals = {resumed.accepted: resumed.approvals}
        return resumed.accepted

    def _no_proof_reason(
        self, progress: UnitProgress, failures: Sequence[_CallFailure]
    ) -> _CallFailure:
        failed_proofs = [p for p in progress.proofs.values() if p is not None]
        if failed_proofs:
            evidence = failed_proofs[-1].proof_evidence
            return _CallFailure(
                code=FailureCode.PROOF_MISSING,
                evidence=f"{evidence.command}: {evidence.key_line}".strip(": "),
            )
        # Without a proof record, every candidate stopped at a recorded call failure.
        return failures[0]

    def _finish(self, progress: UnitProgress) -> None:
        unit = progress.unit
        state = progress.state
        delivery = progress.delivery
        outcome = UnitOutcome(
            unit_id=unit.id,
            state=state,
            attempts=progress.attempt,
            failure_code=progress.failure_code,
            evidence=progress.evidence,
            accepted_candidate=progress.accepted if state == UnitState.COMPLETED else None,
            artifact_ref=delivery.artifact_ref if delivery else None,
            delivery=delivery.decision if delivery else None,
        )
        self._outcomes[unit.id] = outcome
        self._ended(state)
        self._ledger.emit(
            "unit_finished",
            unit_id=unit.id,
            attempt=progress.attempt,
            state=state,
            failure_code=progress.failure_code.value if progress.failure_code else None,
            evidence=progress.evidence or None,
            accepted_candidate=outcome.accepted_candidate,
            artifact_ref=outcome.artifact_ref,
            delivery=outcome.delivery.value if outcome.delivery else None,
        )
        if state == UnitState.COMPLETED:
            if not self._signals.get(unit.id) and self._governor.clean():
                self._concurrency_changed("restored")
            for dependent in self._dependents.get(unit.id, ()):
                waiting = self._waiting[dependent]
                waiting.discard(unit.id)
                if not waiting and dependent not in self._outcomes:
                    heapq.heappush(self._ready, (self._index[dependent], dependent))
        else:
            for dependent in self._dependents.get(unit.id, ()):
                self._block(dependent, unit.id)
        self._notify()

    def _ended(self, state: str) -> None:
        self._ended_by_state[state] = self._ended_by_state.get(state, 0) + 1

    def _block(self, unit_id: str, blocked_by: str) -> None:
        pending = [(unit_id, blocked_by)]
        while pending:
            current, cause = pending.pop()
            if current in self._outcomes:
                continue
            self._outcomes[current] = UnitOutcome(
                unit_id=current,
                state="blocked",
                failure_code=FailureCode.REQUIRES_CLARIFICATION,
                evidence=f"dependency {cause} did not complete",
                blocked_by=cause,
            )
            self._ended("blocked")
            self._ledger.emit("unit_blocked", unit_id=current, blocked_by=cause)
            pending.extend((dependent, current) for dependent in self._dependents.get(current, ()))

    # -- stages ------------------------------------------------------------------

    def _candidate_id(self, progress: UnitProgress, lane: Lane, index: int) -> str:
        base = f"{progress.unit.id}-{lane.value}-{index}"
        return base if progress.attempt == 1 else f"{base}-a{progress.attempt}"

    async def _generate(self, progress: UnitProgress) -> _CallFailure | None:
        unit = progress.unit
        lanes = _AUTHOR_LANES[: progress.width]
        results: list[WorkerResult | _CallFailure | None] = [None] * len(lanes)

        async def author(slot: int, lane: Lane) -> None:
            index = slot + 1
            request = AuthorRequest(
                unit=unit,
                lane=lane,
                candidate_id=self._candidate_id(progress, lane, index),
                triplet_index=index,
                attempt=progress.attempt,
            )
            results[slot] = await self._call(lane, request, progress, request.candidate_id)

        await _concurrently(
            [functools.partial(author, slot, lane) for slot, lane in enumerate(lanes)]
        )
        progress.candidates = [
            r
            for r in results
            if isinstance(r, WorkerResult) and r.decision is Decision.ACCEPT and r.patch
        ]
        failures = [r for r in results if isinstance(r, _CallFailure)]
        return failures[0] if failures else None

    async def _prove_all(
        self, progress: UnitProgress, leases: dict[str, None]
    ) -> list[_CallFailure]:
        # Indexed by candidate, so the evidence chosen later does not depend on which
        # concurrent proof happened to finish first.
        failures: list[_CallFailure | None] = [None] * len(progress.candidates)

        async def one(index: int, candidate: WorkerResult) -> None:
            failures[index] = await self._prove(progress, candidate, leases)

        await _concurrently(
            [functools.partial(one, index, c) for index, c in enumerate(progress.candidates)]
        )
        return [failure for failure in failures if failure is not None]

    async def _prove(
        self, progress: UnitProgress, candidate: WorkerResult, leases: dict[str, None]
    ) -> _CallFailure | None:
        unit, cid = progress.unit, candidate.candidate_id
        progress.proofs[cid] = None
        lease_id = await self._acquire(progress, cid, leases)
        if isinstance(lease_id, _CallFailure):
            return lease_id
        applied = await self._call(
            Lane.APPLIER,
            ApplyRequest(
                unit=unit,
                candidate_id=cid,
                candidate=candidate,
                lease_id=lease_id,
                attempt=progress.attempt,
            ),
            progress,
            cid,
        )
        if isinstance(applied, _CallFailure):
            return applied
        if applied.decision is not Decision.APPLIED:
            key_line = applied.proof_evidence.key_line or (applied.notes or "did not apply")
            # The applier names why (scope_violation for the scope gate); else no proof can run.
            code = applied.failure_code or FailureCode.PROOF_MISSING
            return _CallFailure(code=code, evidence=f"{cid}: {key_line}")
        for proof_attempt in (1, 2):
            proof = await self._call(
                Lane.PROVER,
                ProofRequest(
                    unit=unit,
                    candidate_id=cid,
                    candidate=candidate,
                    applied=applied,
                    proof_attempt=proof_attempt,
                    attempt=progress.attempt,
                ),
                progress,
                cid,
            )
            if isinstance(proof, _CallFailure):
                return proof
            progress.proofs[cid] = proof
            if proof.proof_status is ProofStatus.PASS:
                return None
            if proof_attempt == 1:
                self._ledger.emit(
                    "proof_retry", unit_id=unit.id, candidate_id=cid, attempt=progress.attempt
                )
        return None

    async def _acquire(
        self, progress: UnitProgress, candidate_id: str, leases: dict[str, None]
    ) -> str | _CallFailure:
        unit = progress.unit
        while True:
            request = LeaseRequest(
                unit=unit,
                candidate_id=candidate_id,
                action="acquire",
                holder=unit.id,
                write_scope=unit.write_scope,
                ttl_ms=self._lease_ttl_ms,
            )
            answer = await self._call(
                Lane.LOCKSMITH, request, progress, candidate_id, action="acquire"
            )
            if isinstance(answer, _CallFailure):
                return answer
            if answer.decision is Decision.GRANT and answer.lease_id:
                leases[answer.lease_id] = None
                self._lease_granted.set()
                return answer.lease_id
            # Denied work is requeued, never failed: wait for a release, or the lease TTL.
            self._ledger.emit(
                "lease_denied",
                unit_id=unit.id,
                candidate_id=candidate_id,
                attempt=progress.attempt,
                reason=answer.notes or answer.proof_evidence.key_line,
            )
            released = self._lease_released
            deadline = self._clock.current_time() + self._lease_ttl_ms / 1000
            await self._until(released.wait, deadline)

    async def _renew_leases(self) -> None:
        """
        Renew every held lease a third of the way through its life, while its holder works.

        A lease so expires only when its holder is gone. One the locksmith will
        not renew is lost: the holder's work stops (before delivery) and the unit
        fails with ``scope_overlap_conflict``, since another may be writing now.
        """
        period = self._lease_ttl_ms / 3000
        while True:
            if not any(holder.leases for holder in self._holders.values()):
                await self._lease_granted.wait()
                self._lease_granted = anyio.Event()
            await self._clock.sleep_until(self._clock.current_time() + period)
            for holder in list(self._holders.values()):
                if holder.leases and holder.lost is None:
                    await self._renew(holder)

    async def _renew(self, holder: _Holder) -> None:
        progress = holder.progress
        unit = progress.unit
        request = LeaseRequest(
            unit=unit,
            candidate_id=f"{unit.id}-lease",
            action="acquire",
            holder=unit.id,
            write_scope=unit.write_scope,
            ttl_ms=self._lease_ttl_ms,
        )
        answer = await self._call(
            Lane.LOCKSMITH, request, progress, request.candidate_id, action="renew"
        )
        granted = (
            answer.lease_id
            if isinstance(answer, WorkerResult) and answer.decision is Decision.GRANT
            else None
        )
        if granted is not None and granted in holder.leases:
            return
        if granted is not None:
            # Granted anew (the held lease was gone, or the unit finished meanwhile): not
            # a lease any work holds, so it goes back at once, even as the run ends.
            with anyio.CancelScope(shield=True):
                await self._release(progress, {granted: None})
        if self._holders.get(unit.id) is not holder:
            return  # the unit finished while its lease was being renewed
        reason = (
            answer.evidence
            if isinstance(answer, _CallFailure)
            else "it had expired"
            if granted is not None
            else answer.notes or answer.proof_evidence.key_line or answer.decision.value
        )
        holder.lost = f"the lease on {list(unit.write_scope)} was lost: {reason}"
        self._ledger.emit("lease_lost", unit_id=unit.id, attempt=progress.attempt, reason=reason)
        if progress.state != UnitState.FIXER_ACCEPT:  # a delivery under way finishes
            holder.work.cancel()

    async def _release(self, progress: UnitProgress, leases: dict[str, None]) -> None:
        for lease_id in list(leases):
            request = LeaseRequest(
                unit=progress.unit,
                candidate_id=f"{progress.unit.id}-lease",
                action="release",
                holder=progress.unit.id,
                write_scope=progress.unit.write_scope,
                ttl_ms=self._lease_ttl_ms,
                lease_id=lease_id,
            )
            await self._call(
                Lane.LOCKSMITH, request, progress, request.candidate_id, action="release"
            )
            del leases[lease_id]
        # Wake units whose lease was denied; later waiters wait for the next release.
        self._lease_released.set()
        self._lease_released = anyio.Event()

    async def _adjudicate(
        self, progress: UnitProgress, proven: tuple[tuple[WorkerResult, WorkerResult], ...]
    ) -> str | _CallFailure:
        unit = progress.unit
        proven_ids = {c.candidate_id for c, _ in proven}
        rejected = tuple(c for c in progress.candidates if c.candidate_id not in proven_ids)
        quorum = progress.quorum
        verdicts: list[WorkerResult | _CallFailure | None] = [None] * quorum

        async def fixer(index: int) -> None:
            cid = self._candidate_id(progress, Lane.FIXER, index + 1)
            request = AdjudicationRequest(
                unit=unit,
                candidate_id=cid,
                proven=proven,
                rejected=rejected,
                fixer_index=index + 1,
                quorum_target=quorum,
                attempt=progress.attempt,
            )
            verdicts[index] = await self._call(Lane.FIXER, request, progress, cid)

        await _concurrently([functools.partial(fixer, index) for index in range(quorum)])
        approvals: dict[str, int] = {}
        reasons: list[_CallFailure] = []
        for verdict in verdicts:
            if isinstance(verdict, _CallFailure) or verdict is None:
                reasons.append(
                    verdict
                    or _CallFailure(code=FailureCode.TOOLING_UNAVAILABLE, evidence="no fixer")
                )
            elif verdict.decision is Decision.BLOCKED_SAFETY:
                evidence = (
                    verdict.notes or verdict.proof_evidence.key_line or "fixer blocked for safety"
                )
                return _CallFailure(code=FailureCode.SAFETY_REGRESSION_RISK, evidence=evidence)
            elif verdict.decision is Decision.ACCEPTED and verdict.selected_candidate in proven_ids:
                selected = verdict.selected_candidate
                approvals[selected] = approvals.get(selected, 0) + 1
            elif verdict.decision is Decision.ACCEPTED:
                # Only proven candidates may be accepted: such an approval counts for nothing.
                reasons.append(
                    _CallFailure(
                        code=FailureCode.PROOF_MISSING,
                        evidence=f"a fixer accepted {verdict.selected_candidate}, "
                        "which has no passing proof",
                    )
                )
            else:
                code = verdict.failure_code or FailureCode.REQUIRES_CLARIFICATION
                reasons.append(
                    _CallFailure(code=code, evidence=verdict.notes or "fixer asked for rework")
                )
        progress.approvals = approvals
        best = max(approvals, key=lambda cid: (approvals[cid], cid in proven_ids), default=None)
        if best is not None and approvals[best] >= quorum:
            progress.accepted = best
            return best
        if reasons:
            return reasons[0]
        return _CallFailure(
            code=FailureCode.REQUIRES_CLARIFICATION,
            evidence=f"no candidate reached the quorum of {quorum} (approvals: {approvals})",
        )

    async def _deliver(self, progress: UnitProgress, accepted: str) -> WorkerResult | _CallFailure:
        async with self._delivery_lock:
            return await self._deliver_now(progress, accepted)

    async def _deliver_now(
        self, progress: UnitProgress, accepted: str
    ) -> WorkerResult | _CallFailure:
        unit = progress.unit
        candidate = next(c for c in progress.candidates if c.candidate_id == accepted)
        proof = progress.proofs[accepted]
        assert proof is not None  # noqa: S101 - the quorum gate already required a passing proof
        # A shallow copy: steps are replaced, never changed in place, so they can be shared.
        plan_state = _with_completed(self._plan_state, [self._step_of[unit.id]])
        key = f"{self.run_id}/{unit.id}"
        # Recorded before the side effect, so that a restart knows to check the repository.
        self._ledger.emit(
            "delivery_started",
            unit_id=unit.id,
            candidate_id=accepted,
            attempt=progress.attempt,
            idempotency_key=key,
            approvals=progress.approvals.get(accepted, 0),
        )
        result = await self._call(
            Lane.INTEGRATOR,
            DeliveryRequest(
                unit=unit,
                candidate_id=accepted,
                candidate=candidate,
                proof=proof,
                approvals=progress.approvals.get(accepted, 0),
                plan_state=plan_state,
                attempt=progress.attempt,
                idempotency_key=key,
            ),
            progress,
            accepted,
        )
        if isinstance(result, _CallFailure):
            return result
        if result.decision is Decision.BLOCKED_DELIVERY:
            evidence = (
                result.notes or result.proof_evidence.key_line or "integrator blocked delivery"
            )
            code = result.failure_code or FailureCode.DELIVERY_BLOCKED
            return _CallFailure(code=code, evidence=evidence)
        # The integrator wrote it; the engine only records what was written.
        self._plan_state = plan_state
        return result

    # -- calls -------------------------------------------------------------------

    async def _until(self, wait: Callable[[], Awaitable[object]], deadline: float) -> bool:
        """Await ``wait()`` until ``deadline`` on the run's clock: True if it finished first."""
        finished = False
        async with anyio.create_task_group() as group:

            async def watchdog() -> None:
                await self._clock.sleep_until(deadline)
                group.cancel_scope.cancel()

            group.start_soon(watchdog)
            await wait()
            finished = True
            group.cancel_scope.cancel()
        return finished

    async def _on_slot(self, lane: Lane, adapter: BoundCall, request: object) -> object:
        """A call on the executor's workers waits for a slot; the timeout starts after."""
        limiter = self._slots
        if limiter is None or lane not in self._executor_info.remote_lanes:
            return await self._timed(adapter, request)
        if not self._saturated and limiter.available_tokens < 1:
            self._saturated = True
            self._regate("saturated")
        holder = object()
        await limiter.acquire_on_behalf_of(holder)
        try:
            return await self._timed(adapter, request)
        finally:
            limiter.release_on_behalf_of(holder)

    async def _timed(self, adapter: BoundCall, request: object) -> object:
        if self._timeout is None:
            return await adapter(request)
        if isinstance(self._clock, SystemClock):
            with anyio.move_on_after(self._timeout):
                return await adapter(request)
            raise _TimedOut
        box: list[object] = []
        errors: list[Exception] = []

        async def call() -> None:
            try:
                box.append(await adapter(request))
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
                errors.append(exc)

        await self._until(call, self._clock.current_time() + self._timeout)
        if errors:
            raise errors[0]
        if not box:
            raise _TimedOut
        return box[0]

    async def _call(
        self,
        lane: Lane,
        request: Any,  # noqa: ANN401 - one of the request records
        progress: UnitProgress,
        candidate_id: str,
        **extra: object,
    ) -> WorkerResult | _CallFailure:
        unit = progress.unit
        primary = self._adapters[lane]
        for call in range(1, _MAX_CALLS + 1):
            adapter = primary if call < _MAX_CALLS else self._replacements.get(lane, primary)
            if call == _MAX_CALLS:
                self._ledger.emit(
                    "adapter_replacement", unit_id=unit.id, candidate_id=candidate_id, lane=lane
                )
            started = self._clock.current_time()
            fields: dict[str, object] = {
                "unit_id": unit.id,
                "candidate_id": candidate_id,
                "lane": lane,
                "attempt": progress.attempt,
                "call": call,
                **extra,
            }
            try:
                answer = await self._on_slot(
                    lane,
                    adapter,
                    request if request.call == call else attrs.evolve(request, call=call),
                )
                if type(answer) is Placed:
                    fields["where"] = answer.where
                    answer = answer.answer
            except _TimedOut:
                self._emit_call(fields, started, "timeout")
                self._signal(unit.id)
                if call == 1:
                    self._ledger.emit(
                        "adapter_retry", unit_id=unit.id, candidate_id=candidate_id, lane=lane
                    )
                continue
            except Exception as exc:  # noqa: BLE001 - an aborted turn: recorded, never swallowed silently
                detail = f"{type(exc).__name__}: {exc}"
                self._emit_call(fields, started, "error", error=detail)
                self._signal(unit.id)
                return _CallFailure(
                    code=FailureCode.TOOLING_UNAVAILABLE, evidence=f"{lane.value}: {detail}"
                )
            try:
                result = check_result(answer, unit=unit, candidate_id=candidate_id, lane=lane)
            except InvalidOutputSchema as exc:
                self._emit_call(
                    fields, started, "invalid_output_schema", problems=list(exc.problems)
                )
                self._signal(unit.id)
                return _CallFailure(
                    code=FailureCode.INVALID_OUTPUT_SCHEMA,
                    evidence=f"{lane.value}: {exc.problems[0]}",
                )
            evidence = (
                {"evidence": result.proof_evidence.key_line}
                if result.proof_evidence.key_line
                else {}
            )
            self._emit_call(fields, started, "ok", decision=result.decision.value, **evidence)
            if result.decision is Decision.REJECT:
                self._signal(unit.id)
            return result
        return _CallFailure(
            code=FailureCode.TIMEOUT_RETRY_EXHAUSTED,
            evidence=f"{lane.value} timed out {_MAX_CALLS} times ({self._timeout}s each)",
        )

    def _emit_call(
        self, fields: dict[str, object], started: float, outcome: str, **more: object
    ) -> None:
        duration_ms = (self._clock.current_time() - started) * 1000
        self._ledger.emit(
            "adapter_call", duration_ms=duration_ms, outcome=outcome, **fields, **more
        )


def _gated_slots(
    info: ExecutorInfo, max_slots: int, *, allowed: bool, saturated: bool = False
) -> int:
    """`executor_slots` for an executor whose base defaults to its maximum."""
    base = info.base_slots if info.base_slots is not None else max_slots
    return executor_slots(
        base_slots=base, max_slots=max_slots, scaleout_allowed=allowed, saturated=saturated
    )


async def _concurrently(jobs: Sequence[Callable[[], Coroutine[Any, Any, None]]]) -> None:
    """Run jobs at once; the last one in this task, which saves a task per fan-out."""
    if len(jobs) == 1:
        await jobs[0]()
        return
    async with anyio.create_task_group() as group:
        for job in jobs[:-1]:
            group.start_soon(job)
        await jobs[-1]()


def run(
    plan: Plan | Sequence[Unit] | object,
    *,
    roles: Roles,
    backend: str = "asyncio",
    **options: Any,  # noqa: ANN401 - forwarded to Orchestrator
) -> RunResult:
    """
    Run a plan to the end from synchronous code (scripts, notebooks without a loop).

    Args:
        plan: As `Orchestrator.execute` takes it.
        roles: The role adapters.
        backend: ``asyncio`` or ``trio``.
        **options: Any other `Orchestrator` option.

    .. versionadded:: 0.1.0
    """

    async def main() -> RunResult:
        async with Orchestrator(roles=roles, **options) as orchestrator:
            return await orchestrator.execute(plan)

    return anyio.run(main, backend=backend)
