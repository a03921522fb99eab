"""
What ``mesh run`` shows while a run goes on, folded from its ledger events. Pure: no I/O.

`LiveState.apply` folds one `LedgerEvent` into the state, in place and at a
cost that does not grow with the units in flight; `LiveState.snapshot` copies
it for another thread to read. The live view draws a snapshot
(`mesh.cli._live_view`), the line view prints `event_line`.

Every text that came from the plan or an adapter (unit ids, objectives,
evidence) is kept through `one_line` with a limit: one line, no control
character, bounded, whatever the event held. It is still not markup: the
views show it as plain text.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ..contracts._events import LedgerEvent
from ..contracts._text import one_line

__all__ = [
    "FAILURES_KEPT",
    "Failure",
    "InFlight",
    "LiveState",
    "RunPhase",
    "Stage",
    "clock_text",
    "event_line",
    "shown",
]

FAILURES_KEPT: Final = 5
"""The latest failures a state keeps (older ones are in the final report)."""
_ID_CHARS: Final = 80
_TEXT_CHARS: Final = 300


class Stage(enum.StrEnum):
    """What a unit in flight is doing, as far as its ledger events tell."""

    GENERATION = "generation"
    """Coders and the reducer write candidates."""
    LEASE = "lease"
    """Waiting for the lease on its write scope (another unit holds it)."""
    APPLY = "apply"
    """Candidates are applied in their workspaces, after the scope gate."""
    PROOF = "proof"
    """The proof command runs on applied candidates."""
    ADJUDICATION = "adjudication"
    """The fixer quorum judges the proven candidates."""
    DELIVERY = "delivery"
    """The integrator delivers the accepted candidate."""


class RunPhase(enum.StrEnum):
    """Where the whole run is."""

    STARTING = "starting"
    """No event yet: the run is being set up."""
    RUNNING = "running"
    """Units are being scheduled."""
    FINISHED = "finished"
    """Every unit ended (``run_finished``)."""
    CANCELLED = "cancelled"
    """The run was cancelled (``run_cancelled``: Ctrl-C, SIGTERM, a cancel)."""
    FAILED = "failed"
    """An adapter's mistake stopped the run (``run_failed``)."""


# A unit's lifecycle state (``unit_transition``'s to_state) and the stage that follows it.
_STAGE_AFTER_STATE: Final = MappingProxyType(
    {
        "planned": Stage.GENERATION,
        "candidates_ready": Stage.APPLY,
        "proofs_ready": Stage.ADJUDICATION,
        "fixer_accept": Stage.DELIVERY,
    }
)
# ``adapter_call`` is recorded when a call ends: the stage shown is the one its
# lane belongs to, except that a candidate applied goes on to its proof.
_STAGE_OF_LANE: Final = MappingProxyType(
    {
        "coder": Stage.GENERATION,
        "reducer": Stage.GENERATION,
        "applier": Stage.APPLY,
        "prover": Stage.PROOF,
        "fixer": Stage.ADJUDICATION,
        "integrator": Stage.DELIVERY,
    }
)


def _text(value: object, limit: int = _TEXT_CHARS) -> str:
    """Untrusted event text on one bounded line (anything not text is nothing)."""
    return one_line(value, limit) if isinstance(value, str) else ""


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@attrs.frozen(kw_only=True)
class InFlight:
    """One unit being worked on."""

    label: str
    """The unit id, printable."""
    attempt: int
    stage: Stage
    started_at: float
    """Run clock time of its ``unit_started`` in this process."""


@attrs.frozen(kw_only=True)
class Failure:
    """A unit that ended without completing."""

    label: str
    state: str
    """``failed`` or ``blocked``."""
    code: str
    """Its failure code."""
    evidence: str
    """Why, on one bounded line."""


@attrs.define(kw_only=True)
class LiveState:
    """
    A run as its ledger events so far tell it: counts, units in flight, latest failures.

    Changed in place by `apply`, so that an event costs the same however many
    units are in flight; whoever reads it from another thread reads a
    `snapshot`, taken under the lock that its `apply` calls hold.
    """

    objectives: Mapping[str, str] = attrs.field(factory=dict)
    """Each unit's objective by unit id, printable and bounded (see `of_plan`)."""
    run_id: str = ""
    phase: RunPhase = RunPhase.STARTING
    resumed: bool = False
    started_at: float | None = None
    """Run clock time of ``run_started``/``run_resumed``."""
    total: int | None = None
    earlier: int = 0
    """Units that had ended before a resume."""
    completed: int = 0
    failed: int = 0
    blocked: int = 0
    in_flight: dict[str, InFlight] = attrs.field(factory=dict)
    """By unit id, in the order they started."""
    limit: int | None = None
    """Units that may be in flight at once now."""
    target: int | None = None
    """What the budget allows (the limit is lower under backpressure)."""
    budget_mode: str = ""
    concurrency_reason: str = ""
    failures: tuple[Failure, ...] = ()
    """The latest `FAILURES_KEPT` failures, oldest first."""
    reason: str = ""
    """Why the run was cancelled or failed."""

    @classmethod
    def of_plan(cls, objectives: Mapping[str, str]) -> LiveState:
        """The state before any event, of a plan whose units have these objectives (by id)."""
        printable = {uid: one_line(text, _TEXT_CHARS) for uid, text in objectives.items()}
        return cls(objectives=MappingProxyType(printable))

    @property
    def waiting(self) -> int | None:
        """Units neither ended nor in flight: ready, or waiting for their dependencies."""
        if self.total is None:
            return None
        ended = self.earlier + self.completed + self.failed + self.blocked
        return max(self.total - ended - len(self.in_flight), 0)

    def objective(self, unit_id: str) -> str:
        """The unit's objective, or nothing when the plan does not name it."""
        return self.objectives.get(unit_id, "")

    def apply(self, event: LedgerEvent) -> LiveState:
        """
        Fold ``event`` in, in place; returns this state (``state = state.apply(event)``).

        Most events change nothing shown (each adapter call of a stage already
        shown, the records of candidates and proofs): those cost a look-up. The
        others change a few fields, or one unit in flight: never a copy of them all.
        """
        folded = _FOLDS.get(event.event)
        if folded is not None:
            folded(self, event)
        return self

    def snapshot(self) -> LiveState:
        """A copy that later events leave as it is: what another thread draws."""
        return attrs.evolve(self, in_flight=dict(self.in_flight))


def _key(event: LedgerEvent) -> str:
    return event.unit_id or ""


def _moved(state: LiveState, event: LedgerEvent, stage: Stage | None = None) -> None:
    """The in-flight unit of ``event`` at its attempt and ``stage`` (nothing if not in flight)."""
    unit = state.in_flight.get(_key(event))
    if unit is None:
        return
    attempt = event.attempt if event.attempt is not None else unit.attempt
    stage = stage if stage is not None else unit.stage
    if (attempt, stage) != (unit.attempt, unit.stage):
        # In place: the unit keeps its place in the order they started.
        state.in_flight[_key(event)] = attrs.evolve(unit, attempt=attempt, stage=stage)


def _ended(state: LiveState, event: LedgerEvent, failure: Failure | None) -> None:
    """The unit of ``event`` ended: completed, or ``failure``."""
    if event.unit_id is not None:
        state.in_flight.pop(event.unit_id, None)
    if failure is None:
        state.completed += 1
        return
    state.failures = (*state.failures, failure)[-FAILURES_KEPT:]
    if failure.state == "blocked":
        state.blocked += 1
    else:
        state.failed += 1


def _run_started(state: LiveState, event: LedgerEvent) -> None:
    state.run_id = _text(event.run_id, _ID_CHARS)
    state.phase = RunPhase.RUNNING
    state.started_at = event.at
    state.total = _count(event.data.get("units"))
    state.resumed = event.event == "run_resumed"
    state.earlier = _count(event.data.get("finished")) or 0


def _budget_read(state: LiveState, event: LedgerEvent) -> None:
    target = _count(event.data.get("target"))
    # The first budget read sets the limit too: the governor starts at its target.
    if state.limit is None:
        state.limit = target
    state.target = target
    state.budget_mode = _text(event.data.get("mode"), _ID_CHARS)


def _concurrency_changed(state: LiveState, event: LedgerEvent) -> None:
    state.limit = _count(event.data.get("limit"))
    state.target = _count(event.data.get("target"))
    state.concurrency_reason = _text(event.data.get("reason"), _ID_CHARS)


def _unit_started(state: LiveState, event: LedgerEvent) -> None:
    unit = InFlight(
        label=_text(event.unit_id, _ID_CHARS),
        attempt=event.attempt or 1,
        # A fresh attempt writes candidates first; a resumed one says otherwise soon.
        stage=Stage.GENERATION,
        started_at=event.at,
    )
    state.in_flight[_key(event)] = unit


def _unit_transition(state: LiveState, event: LedgerEvent) -> None:
    stage = _STAGE_AFTER_STATE.get(str(event.data.get("to_state")))
    _moved(state, event, stage)


def _rework(state: LiveState, event: LedgerEvent) -> None:
    _moved(state, event, Stage.GENERATION)


def _adapter_call(state: LiveState, event: LedgerEvent) -> None:
    lane = event.lane.value if event.lane is not None else ""
    decision = event.data.get("decision")
    if lane == "locksmith":
        granted = event.data.get("action") == "acquire" and decision == "grant"
        stage = Stage.APPLY if granted else None
    elif lane == "applier" and decision == "applied":
        stage = Stage.PROOF
    else:
        stage = _STAGE_OF_LANE.get(lane)
    _moved(state, event, stage)


def _call_started(state: LiveState, event: LedgerEvent) -> None:
    _moved(state, event, _STAGE_OF_LANE.get(event.lane.value if event.lane else ""))


def _lease_denied(state: LiveState, event: LedgerEvent) -> None:
    _moved(state, event, Stage.LEASE)


def _delivery_started(state: LiveState, event: LedgerEvent) -> None:
    _moved(state, event, Stage.DELIVERY)


def _unit_finished(state: LiveState, event: LedgerEvent) -> None:
    if event.data.get("state") == "completed":
        _ended(state, event, None)
        return
    failure = Failure(
        label=_text(event.unit_id, _ID_CHARS),
        state="failed",
        code=_text(event.data.get("failure_code"), _ID_CHARS) or "unknown",
        evidence=_text(event.data.get("evidence")),
    )
    _ended(state, event, failure)


def _plan_changed(state: LiveState, event: LedgerEvent) -> None:
    """A plan change during the run: its units (and their objectives) from now on."""
    document = event.data.get("units")
    units = document.get("units") if isinstance(document, Mapping) else None
    if not isinstance(units, list):
        return  # a record this view cannot read: it keeps what it knew
    objectives = dict(state.objectives)
    for unit in units:
        if isinstance(unit, Mapping) and isinstance(unit_id := unit.get("id"), str):
            objectives[unit_id] = one_line(str(unit.get("objective", "")), _TEXT_CHARS)
    state.objectives = MappingProxyType(objectives)
    state.total = len(units)


def _unit_cancelled(state: LiveState, event: LedgerEvent) -> None:
    state.in_flight.pop(_key(event), None)


def _unit_blocked(state: LiveState, event: LedgerEvent) -> None:
    blocked_by = _text(event.data.get("blocked_by"), _ID_CHARS) or "?"
    failure = Failure(
        label=_text(event.unit_id, _ID_CHARS),
        state="blocked",
        # What the engine records for a unit whose dependency did not complete.
        code="requires_clarification",
        evidence=f"dependency {blocked_by} did not complete",
    )
    _ended(state, event, failure)


def _run_finished(state: LiveState, event: LedgerEvent) -> None:
    # The run's own counts include the units that ended before a resume.
    completed, failed, blocked = (
        _count(event.data.get(name)) for name in ("completed", "failed", "blocked")
    )
    state.phase = RunPhase.FINISHED
    state.in_flight.clear()
    if completed is not None and failed is not None and blocked is not None:
        state.completed, state.failed, state.blocked, state.earlier = completed, failed, blocked, 0


def _run_cancelled(state: LiveState, event: LedgerEvent) -> None:
    state.phase = RunPhase.CANCELLED
    state.reason = _text(event.data.get("reason")) or "cancelled"


def _run_failed(state: LiveState, event: LedgerEvent) -> None:
    code = _text(event.data.get("failure_code"), _ID_CHARS) or "unknown"
    error = _text(event.data.get("error"))
    state.phase = RunPhase.FAILED
    state.reason = f"{code}: {error}" if error else code


_FOLDS: Final[Mapping[str, Callable[[LiveState, LedgerEvent], None]]] = MappingProxyType(
    {
        "run_started": _run_started,
        "run_resumed": _run_started,
        "budget_read": _budget_read,
        "concurrency_changed": _concurrency_changed,
        "unit_started": _unit_started,
        "unit_transition": _unit_transition,
        "rework": _rework,
        "adapter_call": _adapter_call,
        "call_started": _call_started,
        "lease_denied": _lease_denied,
        "delivery_started": _delivery_started,
        "unit_finished": _unit_finished,
        "unit_blocked": _unit_blocked,
        "plan_changed": _plan_changed,
        "unit_cancelled": _unit_cancelled,
        "run_finished": _run_finished,
        "run_cancelled": _run_cancelled,
        "run_failed": _run_failed,
    }
)


def clock_text(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour (negative is zero)."""
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def shown(state: LiveState, unit_id: str | None) -> str:
    """A unit as a line names it: its id, and its objective when known."""
    label = _text(unit_id, _ID_CHARS) or "?"
    objective = state.objective(unit_id or "")
    return f"{label} ({objective})" if objective else label


def _counts(state: LiveState) -> str:
    return f"{state.completed} completed, {state.failed} failed, {state.blocked} blocked"


_WITH_A_REASON: Final = MappingProxyType(
    {"lease_lost": "lost its lease", "unit_cancelled": "cancelled"}
)
"""Events said as what happened to a unit, and why."""


def event_line(state: LiveState, event: LedgerEvent) -> str | None:  # noqa: PLR0911 - one line per kind
    """
    The line the line view prints for ``event``, given the state after it; None: nothing to say.

    Lines start with the time since the run started (``[m:ss]``).
    """
    name, data = event.event, event.data
    start = state.started_at if state.started_at is not None else event.at
    stamp = f"[{clock_text(event.at - start)}]"
    what = shown(state, event.unit_id)
    if name in {"run_started", "run_resumed"}:
        verb = "resumed" if state.resumed else "started"
        earlier = f", {state.earlier} ended before" if state.resumed else ""
        return f"{stamp} run {state.run_id} {verb}: {state.total} units{earlier}"
    if name in {"budget_read", "concurrency_changed"}:
        why = state.concurrency_reason if name == "concurrency_changed" else "budget"
        return f"{stamp} concurrency: limit {state.limit}, target {state.target} ({why})"
    if name == "unit_started":
        return f"{stamp} {what} started, attempt {event.attempt or 1}"
    if name == "rework":
        reason = _text(data.get("reason"), _ID_CHARS)
        return f"{stamp} {what} reworked: attempt {event.attempt}, after {reason}"
    if name in {"unit_finished", "unit_blocked"}:
        if name == "unit_finished" and data.get("state") == "completed":
            delivery = _text(data.get("delivery"), _ID_CHARS)
            return f"{stamp} {what} completed" + (f" ({delivery})" if delivery else "")
        failure = state.failures[-1]
        return f"{stamp} {what} {failure.state}: {failure.code}: {failure.evidence}"
    if (happened := _WITH_A_REASON.get(name)) is not None:
        return f"{stamp} {what} {happened}: {_text(data.get('reason'))}"
    if name == "run_finished":
        return f"{stamp} run finished: {_counts(state)}"
    if name in {"run_cancelled", "run_failed"}:
        return f"{stamp} run {state.phase.value}: {state.reason}"
    return None
