"""
The scheduler: units start the moment their dependencies complete.

`Orchestrator.execute` owns one task group. Its loop admits ready units while
the concurrency limit allows (the budget's target, lowered by backpressure),
and re-reads the budget whenever something changes; each admitted unit runs in
its own task through the unit pipeline (`._pipeline`), the only writer of its
`UnitProgress`. Adapter calls go through the call gateway (`._gateway`), leases
through the lease keeper (`._leases`). Finished units release their dependants
or block them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import heapq
import math
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, final

import anyio
import attrs

from ..contracts._clock import Clock, SystemClock, time_reader
from ..contracts._enums import DeliveryMode, FailureCode, Lane
from ..contracts._errors import (
    AdapterMistake,
    InputError,
    MeshError,
    RunCancelled,
    ValidationError,
)
from ..contracts._events import JsonLinesSink, Ledger, LedgerEvent, LedgerSink
from ..contracts._records import BudgetDecision, Plan, Unit, estimate_problem
from ..contracts._scopes import scopes_overlap
from ..contracts._text import one_line
from ..planning._budget import MAX_TRIPLET_WIDTH, budget_policy
from ..planning._priority import admission_ranks
from ._executors import BoundCall, Executor, ExecutorInfo, LocalExecutor, executor_slots
from ._fanout import cancel_scope_class
from ._gateway import MIN_HEARTBEAT_TIMEOUT, CallGateway
from ._governor import Backpressure
from ._leases import Holder, LeaseKeeper
from ._lifecycle import UnitProgress, UnitState
from ._mistakes import Mistakes, checked_strict, default_strict, stopped_by
from ._pipeline import UnitPipeline
from ._plan_change import PlanChange, planned_change, unit_ids_of
from ._plan_state import (
    initial_plan_state,
    plan_document,
    plan_units,
    step_index,
    with_completed,
)
from ._results import ResumePoint, RunResult, RunStatistics
from ._retry import DEFAULT_RETRY, RetryPolicy, checked_retry
from ._roles import LeaseTable, Roles, is_rerun_safe, preflight_problems
from ._stream import DEFAULT_BUFFER, EventStream, StreamHub
from ._summary import MetricsCollector, OutcomeState, UnitOutcome
from ._tracing import TracerProviderLike, tracing_for

__all__ = ["Orchestrator", "checked_estimates", "told_of_orchestrators"]

# The roles a run cannot do without (the reducer is optional; a LeaseTable is the default
# locksmith).
_REQUIRED_ROLES: Final = (Lane.CODER, Lane.APPLIER, Lane.PROVER, Lane.FIXER, Lane.INTEGRATOR)

BudgetProvider = Callable[[], BudgetDecision | Awaitable[BudgetDecision]]
"""Returns the current budget decision; called again during the run."""

_ON_ORCHESTRATOR: Final[contextvars.ContextVar[tuple[Callable[[Orchestrator], None], ...]]] = (
    contextvars.ContextVar("mesh_on_orchestrator", default=())
)


@contextlib.contextmanager
def told_of_orchestrators(told: Callable[[Orchestrator], None]) -> Iterator[None]:
    """
    Tell ``told`` of each orchestrator entered in this context (and the tasks it starts).

    How a run handle, the command line's signal handling or its plan watcher reach
    the engine that `mesh.run` builds inside them; several may listen at once.
    """
    token = _ON_ORCHESTRATOR.set((*_ON_ORCHESTRATOR.get(), told))
    try:
        yield
    finally:
        _ON_ORCHESTRATOR.reset(token)


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
        estimates: Seconds each unit is expected to take, by unit id (e.g. its
            duration in a past run, `unit_durations`); they take precedence over
            the units' own ``estimate_seconds``. Ready units start by longest
            estimated remaining path; without any estimate, in plan order.
        resolve_base: Turns a unit's ``base_sha`` (``HEAD``, a branch) into the
            commit its candidates start from, when each attempt begins: the
            coders' requests then carry that commit as ``unit.base_sha``.
            `mesh.run` on a repository passes the repository's own.
        preflight: Ask the adapters to check themselves when `execute` starts
            (below); `mesh.run` on a repository asks them before it creates
            anything, and turns this off.
        strict: Stop the run at an adapter's first mistake (it raised, or its
            answer broke the contract): `execute` raises `AdapterMistake`,
            which says what was asked, of which adapter, and what was wrong.
            False: the mistake is recorded (an ``adapter_call`` event, the
            unit's evidence, backpressure) and the run goes on. Timeouts are
            never mistakes. None (the default): False, except inside a test
            run by mesh's pytest plugin (see `mesh.testing`).
        heartbeat_timeout: Seconds a call that sends heartbeats (`mesh.heartbeat`)
            may go without one before it is ended as hung (a timeout, retried as its
            lane's policy says), long before ``call_timeout``. None (the default):
            heartbeats are not listened for.
        retry: How failed adapter calls are made again: one `RetryPolicy` for
            every lane, or a mapping of lanes to policies (the others keep the
            default: a timed-out call once more, then once by the replacement).
        tracer_provider: Trace the run with this OpenTelemetry ``TracerProvider``
            (``pip install 'mesh[otel]'``): a span for the run, each unit, each
            stage and each adapter call, current while the adapter runs (see
            Tracing in the docs). None (the default): the global provider, if
            the host set one; ``NoOpTracerProvider()``: no tracing.

    The roles are checked before anything runs, every problem at once
    (`mesh.ValidationError`): a missing role, an adapter that cannot be called
    with one request. An adapter may also define ``preflight()`` (sync or
    async) returning a list of problems (strings); it is called when
    `execute` starts, before the first unit, and any problem stops the run
    there (`mesh.ValidationError`). mesh's own adapters use it to refuse a
    `WorkspaceManager` that is not open.

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
        estimates: Mapping[str, float] | None = None,
        resolve_base: Callable[[str], Awaitable[str]] | None = None,
        strict: bool | None = None,
        preflight: bool = True,
        retry: RetryPolicy | Mapping[Lane, RetryPolicy] | Mapping[str, RetryPolicy] | None = None,
        heartbeat_timeout: float | None = None,
        tracer_provider: TracerProviderLike | None = None,
    ) -> None:
        self._strict = default_strict() if strict is None else checked_strict(strict, "strict")
        if not isinstance(roles, Roles):
            raise ValidationError("roles", [f"expected mesh.Roles, got {type(roles).__name__}"])
        if problems := roles.problems(required=_REQUIRED_ROLES):
            raise ValidationError("roles", problems)
        self._resolve_base = resolve_base
        self._preflight = preflight
        self._retry = checked_retry(retry)
        _check_limits(max_attempts, call_timeout, heartbeat_timeout)
        self._estimates = checked_estimates(estimates)
        self._heartbeat_timeout = heartbeat_timeout
        self._clock: Clock = clock or SystemClock()
        locksmith = roles.locksmith
        if locksmith is None:
            locksmith = LeaseTable(clock=self._clock)
        if isinstance(locksmith, LeaseTable):
            locksmith.bind_clock(self._clock)
        if type(locksmith) is LeaseTable:
            # mesh's own table answers with records built checked: no parse per lease. Not
            # a subclass, whose own `__call__` may judge leases its own way.
            roles = attrs.evolve(roles, locksmith=locksmith.answer)
        self._roles = roles
        if executor is not None and not isinstance(executor, Executor):
            raise InputError(
                f"executor must provide start, bind and stop, got {type(executor).__name__}"
            )
        self._executor: Executor = executor or LocalExecutor()
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
        self._hub = StreamHub()
        self._cancel_scope: anyio.CancelScope | None = None
        self._cancel_reason: str | None = None
        self._reset()
        self._tracing = tracing_for(tracer_provider)
        if self._tracing is not None:  # wrapped only when traced: untraced runs pay nothing
            self.execute = self._tracing.run(lambda: self.run_id, self.execute)  # type: ignore[method-assign]
            self._run_unit = self._tracing.unit(  # type: ignore[method-assign,assignment]
                lambda: self.run_id, self._run_unit, lambda unit_id: self._outcomes[unit_id]
            )

    def _reset(self) -> None:
        self._progress: dict[str, UnitProgress] = {}
        """Units in flight; a finished unit leaves only its outcome and a count."""
        self._ended_by_state: dict[UnitState | OutcomeState, int] = {}
        self._outcomes: dict[str, UnitOutcome] = {}
        self._active: dict[str, Unit] = {}
        # Ready units as (admission rank, plan index): the heap's head starts first.
        self._ready: list[tuple[int, int]] = []
        self._changed = anyio.Event()
        self._budget: BudgetDecision | None = None
        self._governor = Backpressure(target=1, clean_stretch=self._clean_stretch)
        self._mistakes = Mistakes(self._roles) if self._strict else None
        self._signals: dict[str, int] = {}
        self._holders: dict[str, Holder] = {}
        self._used_ids: set[str] = set()
        self._changeable = False
        self._began = False
        # How many dependencies each unit still waits for: a count, not a set, so that a
        # large plan leaves fewer objects for the garbage collector to go through.
        self._waiting: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}

    async def __aenter__(self) -> Orchestrator:
        self._entered = True
        for told in _ON_ORCHESTRATOR.get():
            told(self)
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
            state = UnitState(progress.state)
            by_state[state] = by_state.get(state, 0) + 1
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

    def events(self, *, buffer: int = DEFAULT_BUFFER) -> EventStream:
        """
        The run's events from now on, as they happen (``async for event in ...``).

        Opened before `execute`, the stream gets every event of that run;
        opened during it, every event from then on. It ends when the run
        ends. The engine never waits for the reader: past ``buffer`` unread
        events the oldest are dropped (`EventStream.missed`). Read it with
        ``async for`` in this event loop (a task beside `execute`).
        """
        return self._hub.open(buffer)

    def adopt_streams(self, streams: Sequence[EventStream]) -> None:
        """Feed streams opened before this orchestrator existed (a run handle's)."""
        self._hub.streams.extend(streams)

    @property
    def executing(self) -> bool:
        """Whether `execute` is running a plan now."""
        return self._executing

    @property
    def plan_changeable(self) -> bool:
        """Whether `update_plan` can change the run now (its units are under way)."""
        return self._changeable

    def cancel(self, reason: str = "cancelled") -> None:
        """
        Stop the run executing now: its calls are cancelled, its leases released.

        `execute` then records ``run_cancelled`` with ``reason`` and raises
        `RunCancelled`. A repository run keeps its state for `mesh.resume`.
        Nothing happens when no run is executing.
        """
        if not isinstance(reason, str):
            raise InputError(f"reason must be a string, got {type(reason).__name__}")
        if self._cancel_scope is not None and self._cancel_reason is None:
            self._cancel_reason = reason
            self._cancel_scope.cancel()

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
        units, plan_record, step_of, unit_ids = _plan_of(plan, resume)
        prepared = functools.partial(
            _prepared, delivery_mode=delivery_mode, default_proof_command=default_proof_command
        )
        units = tuple(map(prepared, units))
        self._executing = True
        self._reset()
        self._prepared = prepared
        self._plan_record = plan_record
        self._unit_ids = unit_ids
        self._step_of = step_of
        # A resumed run's new units never take an id its events already name.
        self._used_ids.update(_named_units((resume or ResumePoint()).history))
        self._set_units(units)
        metrics = MetricsCollector()
        for event in (resume or ResumePoint()).history:
            metrics.emit(event)
        # Streams last: every other sink, the store among them, has an event before a reader.
        sinks = [
            metrics,
            *self._sinks,
            *((self._file_sink,) if self._file_sink else ()),
            self._hub,
        ]
        self._resume = resume or ResumePoint()
        # Units that completed before a restart stay completed in the plan state written next.
        plan_state = with_completed(
            initial_plan_state(units, plan_record),
            [
                step_of[unit_id]
                for unit_id, checkpoint in self._resume.checkpoints.items()
                if checkpoint.outcome is not None
                and checkpoint.outcome.state == OutcomeState.COMPLETED
                and unit_id in step_of
            ],
        )
        self._now = time_reader(self._clock)
        self._ledger = Ledger(
            run_id=self.run_id, sinks=sinks, now=self._now, first_seq=self._resume.next_seq
        )
        try:
            try:
                with anyio.CancelScope() as scope:
                    self._cancel_scope = scope
                    await self._open_executor(plan_state, step_of)
                    try:
                        await self._run_all(units)
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self._executor.stop()
                self._raise_if_cancelled(scope)
            except BaseException as exc:
                stopped = self._stopped(exc)
                if stopped is exc:
                    raise
                raise stopped from stopped.__cause__
            finally:
                self._executing = False
                self._cancel_scope = None
                self._cancel_reason = None
            outcomes = self._outcomes.values()
            self._ledger.emit(
                "run_finished",
                completed=sum(o.state == OutcomeState.COMPLETED for o in outcomes),
                failed=sum(o.state == OutcomeState.FAILED for o in outcomes),
                blocked=sum(o.state == OutcomeState.BLOCKED for o in outcomes),
            )
        finally:
            # However the run ended, its readers learn that nothing more is coming.
            self._hub.close_all()
        return RunResult(
            run_id=self.run_id,
            outcomes=tuple(self._outcomes[u.id] for u in self._units),
            metrics=metrics.metrics(),
            plan_state=self._pipeline.written_plan_state(),
        )

    def _raise_if_cancelled(self, scope: anyio.CancelScope) -> None:
        if scope.cancelled_caught:
            raise RunCancelled(self._cancel_reason or "cancelled")

    def _stopped(self, stopped: BaseException) -> BaseException:
        """Record why a run stopped early: what `execute` raises for it."""
        # Each way of stopping ends the ledger with its reason, so that the run's readers
        # and a later look at its store see why; a sink failing again must not hide it.
        reason = stopped.reason if isinstance(stopped, RunCancelled) else _cancelled_by(stopped)
        mistake = None if reason is not None else stopped_by(self._mistakes, stopped)
        with contextlib.suppress(Exception):
            if reason is not None:
                self._ledger.emit("run_cancelled", reason=reason)
            elif mistake is not None:
                self._emit_mistake(mistake)
            elif self._began:  # one that failed before it began (a preflight) has no ledger
                self._ledger.emit("run_failed", error=_described(stopped))
        return mistake or stopped

    def _emit_mistake(self, mistake: AdapterMistake) -> None:
        self._ledger.emit(
            "run_failed",
            unit_id=mistake.unit_id,
            candidate_id=mistake.candidate_id,
            lane=mistake.lane,
            attempt=mistake.attempt,
            failure_code=mistake.code.value,
            call=mistake.call,
            adapter=mistake.adapter,
            request_kind=mistake.request_kind,
            problems=list(mistake.problems),
            error=mistake.error,
        )

    async def _open_executor(self, plan_state: dict[str, Any], step_of: dict[str, int]) -> None:
        """Start the executor and bind every adapter to it, before any unit runs."""
        if self._preflight and (problems := await preflight_problems(self._roles)):
            raise ValidationError("roles", problems)
        info: object = await self._executor.start()
        if not isinstance(info, ExecutorInfo):
            with anyio.CancelScope(shield=True):
                await self._executor.stop()
            raise InputError(
                f"the executor's start() returned {type(info).__name__}, not ExecutorInfo"
            )
        try:
            roles = self._roles
            adapters: dict[Lane, BoundCall] = {
                lane: self._executor.bind(lane, roles.for_lane(lane))
                for lane in Lane
                if lane is not Lane.REDUCER or roles.reducer is not None
            }
            replacements: dict[Lane, BoundCall] = {
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
        gateway = CallGateway(
            adapters=adapters,
            replacements=replacements,
            timeout=self._timeout,
            clock=self._clock,
            now=self._now,
            ledger=self._ledger,
            on_signal=self._signal,
            slots=self._slots,
            remote_lanes=info.remote_lanes,
            on_saturated=self._on_saturated,
            unsafe=frozenset(
                lane
                for lane in Lane
                if (adapter := roles.for_lane_or_none(lane)) is not None
                and not is_rerun_safe(lane, adapter)
            ),
            mistakes=self._mistakes,
            policies=self._retry,
            heartbeat_timeout=self._heartbeat_timeout,
            tracing=self._tracing,
            announced_replacements=frozenset(
                lane
                for lane, adapter in roles.replacements.items()
                if lane is not Lane.INTEGRATOR and not is_rerun_safe(lane, adapter)
            ),
        )
        self._gateway = gateway
        self._leases = LeaseKeeper(
            gateway=gateway, ledger=self._ledger, clock=self._clock, ttl_ms=self._lease_ttl_ms
        )
        self._pipeline = UnitPipeline(
            gateway=gateway,
            leases=self._leases,
            ledger=self._ledger,
            run_id=self.run_id,
            plan_state=plan_state,
            step_of=step_of,
            checkpoints=self._resume.checkpoints,
            resolve_base=self._resolve_base,
            rerun_safe_integrator=is_rerun_safe(Lane.INTEGRATOR, roles.for_lane(Lane.INTEGRATOR)),
            tracing=self._tracing,
        )

    def _on_saturated(self) -> None:
        self._saturated = True
        self._regate("saturated")

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
        self._scope_class = cancel_scope_class()
        self._start(units)
        self._changeable = True
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._leases.renew_forever)
                if self._heartbeat_timeout is not None:
                    group.start_soon(self._gateway.watch_heartbeats)
                while True:
                    if self._budget_source is not self._budget:  # a fixed decision is read once
                        await self._read_budget()
                    while len(self._active) < self._governor.limit:
                        admitted = self._next_admissible()
                        if admitted is None:
                            break
                        self._active[admitted.id] = admitted
                        group.start_soon(self._run_unit, admitted)
                    # A unit cancelled by a plan change may still be winding down: wait for it.
                    if len(self._outcomes) == len(self._units) and not self._active:
                        self._changeable = False  # before the group's exit lets a reader in
                        break
                    await self._changed.wait()
                    self._changed = anyio.Event()
                group.cancel_scope.cancel()  # the lease renewer: no unit is left to hold one
        finally:
            self._changeable = False  # every unit ended (or the run stopped): the plan is what ran

    def _set_units(self, units: Sequence[Unit]) -> None:
        self._units = tuple(units)
        self._used_ids.update(unit.id for unit in self._units)
        self._index = {unit.id: index for index, unit in enumerate(self._units)}
        self._rank = admission_ranks(self._units, _merged_estimates(self._units, self._estimates))

    # -- plan changes ------------------------------------------------------------

    def update_plan(self, plan: Plan | Sequence[Unit] | object) -> PlanChange:
        """
        Change the plan of the run executing now: ``plan`` is the whole new plan.

        Steps (or units) that are new are added; those that have not started
        take their new text, scope or dependencies; those left out are
        cancelled, and a running one stops its calls at once (its leases are
        released; it leaves the run without an outcome). Units that finished
        keep their outcome. Dependencies and cycles are checked again, and
        the whole change is refused (`PlanError`, nothing changed) when it
        edits a unit that started, cancels one being delivered, or is
        malformed. Each change is one ``plan_changed`` ledger event, and a
        resumed run continues the plan as last changed.

        A plan's steps are matched by their ``id`` (every step needs one); a
        units document's units by theirs.

        Returns:
            What changed (`PlanChange.added`, ``edited``, ``removed``).
        """
        if not self._changeable:
            raise MeshError(
                "update_plan needs a run executing: call it while execute() runs, "
                "before its last unit ends"
            )
        finished = set(self._outcomes)
        change = planned_change(
            self._units,
            self._plan_record,
            self._unit_ids,
            plan,
            started=finished | set(self._active),
            finished=finished,
            completed={
                unit_id
                for unit_id, outcome in self._outcomes.items()
                if outcome.state == OutcomeState.COMPLETED
            },
            delivering={
                unit_id
                for unit_id, progress in self._progress.items()
                if progress.state == UnitState.FIXER_ACCEPT
            },
            prepared=self._prepared,
            used=self._used_ids,
            stopping={unit_id for unit_id, holder in self._holders.items() if holder.removed},
        )
        if change.changed:
            self._apply(change)
        return change

    def _apply(self, change: PlanChange) -> None:
        self._plan_record = change.plan
        self._unit_ids = dict(change.unit_ids)
        self._set_units(change.units)
        for unit_id in change.removed:
            if (holder := self._holders.get(unit_id)) is not None:
                holder.removed = True
                holder.work.cancel()
        # Who waits for whom, from scratch: edits may have moved any dependency.
        done = {u for u, o in self._outcomes.items() if o.state == OutcomeState.COMPLETED}
        self._waiting = {}
        self._dependents = {}
        for unit in self._units:
            if unit.id in self._outcomes:
                continue
            deps = set(unit.deps)
            self._waiting[unit.id] = len(deps - done)
            for dep in deps:
                self._dependents.setdefault(dep, []).append(unit.id)
        self._pipeline.replan(
            initial_plan_state(self._units, change.plan),
            change.step_of,
            completed=[change.step_of[unit_id] for unit_id in done if unit_id in change.step_of],
        )
        self._record_plan(change.added, change.edited, change.removed, change.step_of)
        self._ready = []
        for unit in self._units:
            unit_id = unit.id
            if unit_id in self._outcomes or unit_id in self._active:
                continue
            blocked_by = [
                dep
                for dep in unit.deps
                if dep not in self._index
                or (dep in self._outcomes and self._outcomes[dep].state != OutcomeState.COMPLETED)
            ]
            if blocked_by:
                self._block(unit_id, min(blocked_by))
            elif not self._waiting[unit_id]:
                self._make_ready(unit_id)
        self._notify()

    def _record_plan(
        self,
        added: Sequence[str],
        edited: Sequence[str],
        removed: Sequence[str],
        step_of: Mapping[str, int],
    ) -> None:
        """One ``plan_changed`` event: what changed, and the whole plan a resume runs."""
        plan = self._plan_record
        self._step_of = dict(step_of)
        self._ledger.emit(
            "plan_changed",
            added=list(added),
            edited=list(edited),
            removed=list(removed),
            units={"units": [unit.to_document() for unit in self._units]},
            **({"plan": plan_document(plan)} if plan is not None else {}),
            step_of=self._step_of,
            unit_ids=dict(self._unit_ids),
        )

    def _start(self, units: Sequence[Unit]) -> None:
        """Dependencies, restored outcomes (when resuming) and the first ready units."""
        restored = {
            unit.id: checkpoint.outcome
            for unit in units
            if (checkpoint := self._resume.checkpoints.get(unit.id)) is not None
            and checkpoint.outcome is not None
        }
        self._began = True
        if self._resume.next_seq > 1:
            self._ledger.emit("run_resumed", units=len(units), finished=len(restored))
        else:
            self._ledger.emit("run_started", units=len(units), **self._retry_record())
        self._announce_executor()
        self._outcomes.update(restored)
        for outcome in restored.values():
            if outcome.state == OutcomeState.BLOCKED:
                self._ended(OutcomeState.BLOCKED)
        done = {unit_id for unit_id, o in restored.items() if o.state == OutcomeState.COMPLETED}
        for unit in units:
            deps = set(unit.deps)
            self._waiting[unit.id] = len(deps - done)
            for dep in deps:
                self._dependents.setdefault(dep, []).append(unit.id)
        for unit in units:
            if unit.id in restored:
                continue
            # A dependency that is neither done nor in this run, or one that stopped before.
            cause = [
                dep for dep in set(unit.deps) - done if dep not in self._index or dep in restored
            ]
            if cause:
                self._block(unit.id, min(cause))
            elif not self._waiting[unit.id]:
                self._make_ready(unit.id)

    def _retry_record(self) -> dict[str, object]:
        """The lanes' retry policies, for ``run_started``, where any differs from the default."""
        changed = {
            lane.value: policy.to_document()
            for lane, policy in self._retry.items()
            if policy != DEFAULT_RETRY
        }
        return {"retry": changed} if changed else {}

    def _notify(self) -> None:
        self._changed.set()

    def _make_ready(self, unit_id: str) -> None:
        heapq.heappush(self._ready, (self._rank[unit_id], self._index[unit_id]))

    def _next_admissible(self) -> Unit | None:
        """The ready unit to start next: the best ranked one that may run beside the others."""
        skipped: list[tuple[int, int]] = []
        chosen: Unit | None = None
        while self._ready:
            entry = heapq.heappop(self._ready)
            unit = self._units[entry[1]]
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
        if decision is self._budget or decision == self._budget:
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
        if unit.id not in self._index:  # left out of the plan before it could begin
            del self._active[unit.id]
            self._ledger.emit("unit_cancelled", unit_id=unit.id, reason="left out of the plan")
            self._notify()
            return
        progress = UnitProgress(unit=unit, max_attempts=self._max_attempts, width=self._width)
        checkpoint = self._resume.checkpoints.get(unit.id)
        if checkpoint is not None:
            progress.attempt = checkpoint.attempt
            progress.candidates = list(checkpoint.candidates)
        self._progress[unit.id] = progress
        self._ledger.emit("unit_started", unit_id=unit.id, attempt=progress.attempt)
        holder = self._holders[unit.id] = self._leases.hold(progress)
        try:
            with holder.work:
                await self._pipeline.drive(holder, self._current_width)
            if holder.work.cancelled_caught and holder.lost is not None and not holder.removed:
                # The renewer stopped the work: another unit may be writing its scope now.
                self._pipeline.fail(progress, FailureCode.SCOPE_OVERLAP_CONFLICT, holder.lost)
        finally:
            self._leases.drop(holder)
            with self._scope_class(shield=True):
                await self._leases.release(progress, holder.leases)
            del self._active[unit.id]
            # Keeping every finished unit's evidence would make the heap, and each
            # full garbage collection, grow with the plan.
            del self._progress[unit.id]
            del self._holders[unit.id]
        if holder.removed:
            if progress.state not in _FINAL:
                self._ledger.emit(
                    "unit_cancelled",
                    unit_id=unit.id,
                    attempt=progress.attempt,
                    reason="left out of the plan",
                )
                self._notify()
                return
            # It finished before its cancellation could land: it stays, with its outcome,
            # in the plan a resume runs too.
            self._set_units((*self._units, unit))
            self._record_plan((unit.id,), (), (), self._step_of)
        self._finish(progress)

    def _current_width(self) -> int:
        return self._width

    def _finish(self, progress: UnitProgress) -> None:
        unit = progress.unit
        state = OutcomeState(progress.state)
        delivery = progress.delivery
        outcome = UnitOutcome(
            unit_id=unit.id,
            state=state,
            attempts=progress.attempt,
            failure_code=progress.failure_code,
            evidence=progress.outcome_evidence(),
            accepted_candidate=progress.accepted if state == OutcomeState.COMPLETED else None,
            artifact_ref=delivery.artifact_ref if delivery else None,
            delivery=delivery.decision if delivery else None,
        )
        self._outcomes[unit.id] = outcome
        self._ended(state)
        self._ledger.emit(
            "unit_finished",
            unit_id=unit.id,
            attempt=progress.attempt,
            state=state.value,
            failure_code=progress.failure_code.value if progress.failure_code else None,
            evidence=outcome.evidence or None,
            accepted_candidate=outcome.accepted_candidate,
            artifact_ref=outcome.artifact_ref,
            delivery=outcome.delivery._value_ if outcome.delivery else None,
        )
        if state == OutcomeState.COMPLETED:
            if not self._signals.get(unit.id) and self._governor.clean():
                self._concurrency_changed("restored")
            for dependent in self._dependents.pop(unit.id, ()):
                self._waiting[dependent] -= 1
                if not self._waiting[dependent] and dependent not in self._outcomes:
                    self._make_ready(dependent)
        else:
            for dependent in self._dependents.pop(unit.id, ()):
                self._block(dependent, unit.id)
        self._notify()

    def _ended(self, state: OutcomeState) -> None:
        self._ended_by_state[state] = self._ended_by_state.get(state, 0) + 1

    def _block(self, unit_id: str, blocked_by: str) -> None:
        pending = [(unit_id, blocked_by)]
        while pending:
            current, cause = pending.pop()
            if current in self._outcomes:
                continue
            self._outcomes[current] = UnitOutcome(
                unit_id=current,
                state=OutcomeState.BLOCKED,
                failure_code=FailureCode.REQUIRES_CLARIFICATION,
                evidence=f"dependency {cause} did not complete",
                blocked_by=cause,
            )
            self._ended(OutcomeState.BLOCKED)
            self._ledger.emit("unit_blocked", unit_id=current, blocked_by=cause)
            pending.extend((dependent, current) for dependent in self._dependents.get(current, ()))


_FINAL: Final = frozenset({UnitState.COMPLETED, UnitState.FAILED})


def _named_units(history: Sequence[LedgerEvent]) -> set[str]:
    """Every unit id a run's events name: of the events, and of the units its changes added."""
    named = {event.unit_id for event in history if event.unit_id}
    for event in history:
        if event.event == "plan_changed" and isinstance(added := event.data.get("added"), list):
            named.update(unit_id for unit_id in added if isinstance(unit_id, str))
    return named


def _plan_of(
    plan: object, resume: ResumePoint | None
) -> tuple[tuple[Unit, ...], Plan | None, dict[str, int], dict[str, str]]:
    """A run's units, plan, each unit's step and each step's unit: as given, or as changed."""
    if resume is not None and resume.plan_change is not None:
        # The plan as last changed before the run stopped: the run's plan now.
        return _changed_plan(resume.plan_change)
    units, plan_record = plan_units(plan)
    return units, plan_record, step_index(units, plan_record), unit_ids_of(units, plan_record)


def _prepared(
    unit: Unit, *, delivery_mode: DeliveryMode | None, default_proof_command: str | None
) -> Unit:
    """A unit as the run runs it: with the run's delivery mode and default proof command."""
    if delivery_mode is None and not default_proof_command:
        return unit
    return attrs.evolve(
        unit,
        delivery_mode=delivery_mode or unit.delivery_mode,
        proof_command=unit.proof_command or default_proof_command or "",
    )


def _changed_plan(
    change: Mapping[str, Any],
) -> tuple[tuple[Unit, ...], Plan | None, dict[str, int], dict[str, str]]:
    """The plan a stopped run last changed to (its ``plan_changed`` event's record)."""
    try:
        units = plan_units(change["units"])[0]
        plan = plan_units(change["plan"])[1] if "plan" in change else None
        step_of = {str(unit_id): int(index) for unit_id, index in change["step_of"].items()}
        unit_ids = {str(step): str(unit_id) for step, unit_id in change["unit_ids"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"the run's last plan change is unreadable: {exc!r}") from None
    steps = len(plan.steps) if plan is not None else len(units)
    known = {unit.id for unit in units}
    if any(not 0 <= index < steps or unit_id not in known for unit_id, index in step_of.items()):
        raise InputError("the run's last plan change is unreadable: its steps do not match")
    return units, plan, step_of, unit_ids


def _described(error: BaseException) -> str:
    """An error as one bounded line, a lone exception of a group as itself."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return one_line(f"{type(error).__name__}: {error}")[:500]


def _check_limits(
    max_attempts: int, call_timeout: float | None, heartbeat_timeout: float | None
) -> None:
    if max_attempts < 1:
        raise InputError(f"max_attempts must be >= 1, got {max_attempts}")
    if call_timeout is not None and call_timeout <= 0:
        raise InputError(f"call_timeout must be > 0 seconds, got {call_timeout}")
    if heartbeat_timeout is not None and not MIN_HEARTBEAT_TIMEOUT <= heartbeat_timeout < math.inf:
        raise InputError(
            f"heartbeat_timeout must be at least {MIN_HEARTBEAT_TIMEOUT} seconds, "
            f"got {heartbeat_timeout}"
        )


def _cancelled_by(stopped: BaseException) -> str | None:
    """Why a run stopped, when it was cancelled from outside or interrupted (else None)."""
    if isinstance(stopped, BaseExceptionGroup):
        reasons = {_cancelled_by(inner) for inner in stopped.exceptions}
        return reasons.pop() if len(reasons) == 1 else None
    if isinstance(stopped, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(stopped, anyio.get_cancelled_exc_class()):
        # On asyncio a Ctrl-C reaches the run as this too: the runner cancels its main task.
        return "cancelled from outside the run (a cancel scope, a timeout or Ctrl-C)"
    return None


def checked_estimates(estimates: object) -> dict[str, float]:
    """Estimates as `Orchestrator` takes them, checked: seconds by unit id (None: none)."""
    if estimates is None:
        return {}
    if not isinstance(estimates, Mapping):
        raise InputError(f"estimates must map unit ids to seconds, got {type(estimates).__name__}")
    for unit_id, seconds in estimates.items():
        if not isinstance(unit_id, str):
            raise InputError(f"estimates: unit ids are strings, got {type(unit_id).__name__}")
        if (problem := estimate_problem(seconds)) is not None or seconds is None:
            raise InputError(f"estimates[{unit_id!r}]: {problem or 'expected a number of seconds'}")
    return {unit_id: float(seconds) for unit_id, seconds in estimates.items()}


def _merged_estimates(units: Sequence[Unit], given: Mapping[str, float]) -> dict[str, float] | None:
    """Seconds by unit id: the given ones first, else each unit's own (None: no estimate at all)."""
    merged = {
        unit.id: seconds
        for unit in units
        if (seconds := given.get(unit.id, unit.estimate_seconds)) is not None
    }
    return merged or None


def _gated_slots(
    info: ExecutorInfo, max_slots: int, *, allowed: bool, saturated: bool = False
) -> int:
    """`executor_slots` for an executor whose base defaults to its maximum."""
    base = info.base_slots if info.base_slots is not None else max_slots
    return executor_slots(
        base_slots=base, max_slots=max_slots, scaleout_allowed=allowed, saturated=saturated
    )
