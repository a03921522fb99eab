"""
The call gateway: every adapter call of a run goes through `CallGateway.call`.

One call is: wait for an executor slot when the lane runs remotely, the per-call
timeout on the run's clock, the retries its lane's `RetryPolicy` allows (by
default one retry after a timeout and one replacement after that), the strict
check of the answer, one ``adapter_call`` ledger event, and a
backpressure signal for a reject, a timeout, a schema failure or an error. The
unit pipeline sees only a checked `WorkerResult` or a `CallFailure`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import attrs

from ..contracts._clock import Clock, SystemClock
from ..contracts._enums import Decision, FailureCode, Lane
from ..contracts._errors import InvalidOutputSchema
from ..contracts._events import Ledger
from ..contracts._records import Unit, WorkerResult
from ._call_facts import CALL_BEAT, CALL_FACTS, CallBeat
from ._executors import BoundCall, Placed
from ._fanout import is_stray_cancellation
from ._mistakes import Mistakes
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._roles import check_result, check_selection

if TYPE_CHECKING:
    from ._tracing import Tracing

__all__ = ["MIN_HEARTBEAT_TIMEOUT", "CallFailure", "CallGateway", "until"]

_QUIET_QUARTERS: Final = 4
MIN_HEARTBEAT_TIMEOUT: Final = 0.1
"""Seconds: a shorter heartbeat timeout would keep the run's loop busy watching."""


@attrs.frozen(kw_only=True)
class CallFailure:
    """Why an adapter call (or a stage) produced no usable result."""

    code: FailureCode
    evidence: str


class _TimedOut(Exception):
    pass


async def until(clock: Clock, wait: Callable[[], Awaitable[object]], deadline: float) -> bool:
    """Await ``wait()`` until ``deadline`` on ``clock``: True if it finished first."""
    finished = False
    async with anyio.create_task_group() as group:

        async def watchdog() -> None:
            await clock.sleep_until(deadline)
            group.cancel_scope.cancel()

        group.start_soon(watchdog)
        await wait()
        finished = True
        group.cancel_scope.cancel()
    return finished


@final
class CallGateway:
    """
    Calls the adapters bound for a run, each call checked, timed and recorded.

    Args:
        adapters: The bound adapter of each lane.
        replacements: The adapter that takes a lane's third call, where one is given.
        timeout: Seconds a call may take (None: no limit).
        clock: The run's clock (the timeout runs on it).
        now: The clock's time, read the cheapest way for the running loop.
        ledger: Where each call's event goes.
        on_signal: Told the unit id of every call that fed backpressure.
        slots: The executor's slot limiter for remote lanes (None: no limit).
        remote_lanes: The lanes whose calls run on the executor's workers.
        on_saturated: Told when a remote call first found every slot taken.
        policies: Each lane's `RetryPolicy` (default: mesh's classic one for every lane).
        heartbeat_timeout: Seconds without a heartbeat after which a call that sent
            heartbeats is hung (None: heartbeats are not listened for).
        mistakes: Given in a strict run: a call that raises or answers invalidly
            raises its `AdapterMistake` (recorded first). None: the call fails,
            and the run goes on.
        tracing: Given in a traced run: each call is a span, current while its adapter runs.
    """

    def __init__(
        self,
        *,
        adapters: Mapping[Lane, BoundCall],
        replacements: Mapping[Lane, BoundCall],
        timeout: float | None,
        clock: Clock,
        ledger: Ledger,
        on_signal: Callable[[str], None],
        now: Callable[[], float] | None = None,
        slots: anyio.CapacityLimiter | None = None,
        remote_lanes: frozenset[Lane] = frozenset(),
        on_saturated: Callable[[], None] = lambda: None,
        unsafe: frozenset[Lane] = frozenset(),
        announced_replacements: frozenset[Lane] = frozenset(),
        mistakes: Mistakes | None = None,
        policies: Mapping[Lane, RetryPolicy] | None = None,
        heartbeat_timeout: float | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._adapters = adapters
        self._tracing = tracing
        self._heartbeat_timeout = heartbeat_timeout
        # The calls in progress that listen for heartbeats, for the watchdog.
        self._beats: dict[int, CallBeat] = {}
        self._policies = policies or dict.fromkeys(Lane, DEFAULT_RETRY)
        # Jitter only spreads retries apart: no secret rides on it.
        self._random = random.Random()  # noqa: S311
        self._mistakes = mistakes
        # Lanes whose adapter is not safe to re-run: each call is recorded durably as
        # started before it is made, so that a resume can tell it was interrupted.
        # Lanes whose adapter is not safe to re-run are never called twice for one
        # request: no retry after a timeout (the first call may still be at work, as a
        # sync adapter's thread is), no replacement. The integrator's start is recorded
        # anyway (``delivery_started``).
        self._unsafe = unsafe
        self._announced = unsafe - {Lane.INTEGRATOR}
        self._announced_replacements = announced_replacements
        self._replacements = replacements
        self._timeout = timeout
        self._clock = clock
        self._now = now or clock.current_time
        self._ledger = ledger
        self._on_signal = on_signal
        self._slots = slots
        self._remote_lanes = remote_lanes
        self._on_saturated = on_saturated
        self._saturated = False
        # The system clock's deadlines are the event loop's own: a cancel scope suffices.
        self._loop_clock = isinstance(clock, SystemClock)
        # No slot to wait for and no timeout: the adapter is awaited as it is.
        self._direct = slots is None and timeout is None and heartbeat_timeout is None

    async def call(  # noqa: C901, PLR0912, PLR0915 - one call's whole story: retries, replacement, each outcome
        self,
        lane: Lane,
        request: Any,  # noqa: ANN401 - one of the request records
        *,
        unit: Unit,
        attempt: int,
        candidate_id: str,
        **extra: object,
    ) -> WorkerResult | CallFailure:
        """Call ``lane``'s adapter for ``request``: its checked answer, or why there is none."""
        unit_id = unit.id
        primary = self._adapters[lane]
        policy = self._policies[lane]
        now = self._now
        last = policy.calls
        failure: CallFailure | None = None
        for call in range(1, last + 1):
            replacing = policy.replacement and call == last and call > 1
            adapter = self._replacements.get(lane, primary) if replacing else primary
            started = now()
            # The call's event, its first two values set when it ends: one dict per call,
            # already in the ledger's field order.
            event: dict[str, object] = {
                "duration_ms": None,
                "outcome": None,
                "unit_id": unit_id,
                "candidate_id": candidate_id,
                "lane": lane,
                "attempt": attempt,
                "call": call,
                **extra,
            }
            asked = request if request.call == call else attrs.evolve(request, call=call)
            if lane in (self._announced_replacements if replacing else self._announced):
                self._announce(lane, unit_id, candidate_id, attempt, call)
            traced = None if self._tracing is None else self._tracing.start_call(event)
            # What the adapter notes about this call (`note_call`) joins its event.
            token = CALL_FACTS.set({})
            beat: CallBeat | None = None
            if self._heartbeat_timeout is not None:
                beat = self._listen()
                beat_token = CALL_BEAT.set(beat)
            try:
                try:
                    if self._direct:
                        answer = await adapter(asked)
                    else:
                        answer = await self._on_slot(lane, adapter, asked)
                    if type(answer) is Placed:
                        event["where"] = answer.where
                        answer = answer.answer
                except _TimedOut:
                    hung = beat is not None and beat.hung
                    more = {"hung": True} if hung else {}
                    self._record(event, started, "timeout", beat, **more)
                    self._on_signal(unit_id)
                    if lane in self._unsafe:
                        ended = (
                            f"stopped sending heartbeats ({self._heartbeat_timeout}s without one)"
                            if hung
                            else f"timed out ({self._timeout}s)"
                        )
                        return CallFailure(
                            code=FailureCode.TIMEOUT_RETRY_EXHAUSTED,
                            evidence=f"{lane.value} {ended} and was not called again: "
                            "its adapter is not safe to re-run",
                        )
                    failure = CallFailure(
                        code=FailureCode.TIMEOUT_RETRY_EXHAUSTED,
                        evidence=f"{lane.value} stopped sending heartbeats "
                        f"({self._heartbeat_timeout}s without one)"
                        if hung
                        else f"{lane.value} timed out ({self._timeout}s)"
                        if call == 1
                        else f"{lane.value} timed out {call} times ({self._timeout}s each)",
                    )
                except BaseException as exc:  # an aborted turn: recorded, never swallowed silently
                    if not isinstance(exc, Exception) and not is_stray_cancellation(exc):
                        raise
                    detail = f"{type(exc).__name__}: {exc}"
                    self._record(event, started, "error", beat, error=detail)
                    self._on_signal(unit_id)
                    failure = self._failed(
                        lane, asked, unit_id, attempt, replacing, error=detail, cause=exc
                    )
                else:
                    try:
                        result = check_result(
                            answer, unit=unit, candidate_id=candidate_id, lane=lane
                        )
                        if lane is Lane.FIXER:
                            check_selection(request, result)
                    except InvalidOutputSchema as exc:
                        self._record(
                            event,
                            started,
                            "invalid_output_schema",
                            beat,
                            problems=list(exc.problems),
                        )
                        self._on_signal(unit_id)
                        failure = self._failed(
                            lane, asked, unit_id, attempt, replacing, problems=exc.problems
                        )
                    else:
                        decision = result.decision
                        event["decision"] = decision._value_
                        if key_line := result.proof_evidence.key_line:
                            event["evidence"] = key_line
                        self._record(event, started, "ok", beat)
                        if decision is Decision.REJECT:
                            self._on_signal(unit_id)
                        return result
            finally:
                CALL_FACTS.reset(token)
                if traced is not None:
                    traced.end()
                if beat is not None:
                    del self._beats[id(beat)]
                    CALL_BEAT.reset(beat_token)
            if call == last or failure.code not in policy.retry_on or lane in self._unsafe:
                return failure
            await self._before_retry(
                policy,
                lane=lane,
                unit_id=unit_id,
                candidate_id=candidate_id,
                call=call,
                failure=failure,
            )
        raise AssertionError("unreachable: the last call returns")  # pragma: no cover

    async def _before_retry(
        self,
        policy: RetryPolicy,
        *,
        lane: Lane,
        unit_id: str,
        candidate_id: str,
        call: int,
        failure: CallFailure,
    ) -> None:
        """Record that a failed call is made again, and wait as its lane's policy says."""
        wait = policy.wait(call, self._random.random())
        following = call + 1
        self._ledger.emit(
            "adapter_replacement"
            if policy.replacement and following == policy.calls
            else "adapter_retry",
            unit_id=unit_id,
            candidate_id=candidate_id,
            lane=lane,
            call=following,
            after=failure.code.value,
            wait_seconds=wait,
        )
        if wait > 0:
            await self._clock.sleep_until(self._clock.current_time() + wait)

    def _failed(
        self,
        lane: Lane,
        request: Any,  # noqa: ANN401 - one of the request records
        unit_id: str,
        attempt: int,
        replacing: bool,  # noqa: FBT001 - positional, beside the request it describes
        *,
        problems: tuple[str, ...] = (),
        error: str | None = None,
        cause: BaseException | None = None,
    ) -> CallFailure:
        """
        How a call that raised (``error``) or answered invalidly ends, once recorded.

        Its failure, which the unit's evidence keeps; in a strict run, its
        `AdapterMistake`, raised (chained to what the adapter raised).
        """
        if self._mistakes is not None:
            raise self._mistakes.found(
                lane=lane,
                request=request,
                unit_id=unit_id,
                candidate_id=request.candidate_id,
                attempt=attempt,
                call=request.call,
                replacement=replacing,
                problems=problems,
                error=error,
            ) from cause
        if error is not None:
            return CallFailure(
                code=FailureCode.TOOLING_UNAVAILABLE, evidence=f"{lane.value}: {error}"
            )
        return CallFailure(
            code=FailureCode.INVALID_OUTPUT_SCHEMA, evidence=f"{lane.value}: {'; '.join(problems)}"
        )

    def _announce(
        self, lane: Lane, unit_id: str, candidate_id: str, attempt: int, call: int
    ) -> None:
        """Record durably that a call not safe to re-run starts (a resume will not redo it)."""
        self._ledger.emit(
            "call_started",
            unit_id=unit_id,
            candidate_id=candidate_id,
            lane=lane,
            attempt=attempt,
            call=call,
        )

    async def _on_slot(self, lane: Lane, adapter: BoundCall, request: object) -> object:
        """A call on the executor's workers waits for a slot; the timeout starts after."""
        limiter = self._slots
        if limiter is None or lane not in self._remote_lanes:
            return await self._timed(adapter, request)
        if not self._saturated and limiter.available_tokens < 1:
            self._saturated = True
            self._on_saturated()
        holder = object()
        await limiter.acquire_on_behalf_of(holder)
        try:
            return await self._timed(adapter, request)
        finally:
            limiter.release_on_behalf_of(holder)

    def _listen(self) -> CallBeat:
        """Listen for the heartbeats of the call starting now (`mesh.heartbeat`)."""
        timeout = self._heartbeat_timeout or 0.0
        beat = CallBeat(every=timeout / 4)
        self._beats[id(beat)] = beat
        return beat

    async def watch_heartbeats(self) -> None:
        """
        Forever: end each call whose heartbeats stopped for ``heartbeat_timeout``.

        Looks every quarter of the timeout, on a fixed grid of the run's clock,
        and counts the quarters in which a call sent nothing: a call is found
        hung between one and one and a quarter timeouts after its last
        heartbeat. A call that never sent one is left to its ``call_timeout``.
        """
        period = (self._heartbeat_timeout or 0.0) / 4
        clock = self._clock
        start = clock.current_time()
        tick = 0
        while True:
            tick += 1
            await clock.sleep_until(start + tick * period)
            # Quarters that went by while the loop was busy count as they are: whole ones.
            tick = max(tick, int((clock.current_time() - start) / period))
            for beat in list(self._beats.values()):
                if beat.count != beat.seen:
                    beat.seen, beat.changed = beat.count, tick
                elif beat.count and not beat.hung and tick - beat.changed >= _QUIET_QUARTERS:
                    beat.hung = True
                    beat.scope.cancel()

    async def _timed(self, adapter: BoundCall, request: object) -> object:
        beat = CALL_BEAT.get()
        if beat is None:
            return await self._in_time(adapter, request)
        with beat.scope:
            return await self._in_time(adapter, request)
        raise _TimedOut  # its heartbeats stopped

    async def _in_time(self, adapter: BoundCall, request: object) -> object:
        if self._timeout is None:
            return await adapter(request)
        if self._loop_clock:
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

        await until(self._clock, call, self._clock.current_time() + self._timeout)
        if errors:
            raise errors[0]
        if not box:
            raise _TimedOut
        return box[0]

    def _record(
        self,
        event: dict[str, object],
        started: float,
        outcome: str,
        beat: CallBeat | None = None,
        **more: object,
    ) -> None:
        """Send a call's ``adapter_call`` event, with how long it took and how it ended."""
        event["duration_ms"] = (self._now() - started) * 1000
        event["outcome"] = outcome
        if beat is not None and beat.count:
            event["heartbeats"] = beat.count
        if facts := CALL_FACTS.get():
            event["facts"] = dict(facts)
        if more:
            event.update(more)
        self._ledger.emit_fields("adapter_call", event)
