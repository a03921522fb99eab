"""
A stopped run's state, rebuilt from its recorded events. Pure: no I/O.

The event log is the source of truth: ``unit_finished`` and ``unit_blocked``
end a unit, ``rework`` starts its next attempt, ``candidates_recorded``,
``proofs_recorded`` and ``delivery_started`` keep what the current attempt
decided, so that a restart continues from there instead of redoing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from ..contracts._contract import parse_worker_result
from ..contracts._enums import Decision, FailureCode
from ..contracts._errors import InvalidOutputSchema, MeshError
from ..contracts._events import LedgerEvent
from ..contracts._records import WorkerResult
from ..contracts._text import one_line
from ._results import ResumePoint, UnitCheckpoint
from ._summary import OutcomeState, UnitOutcome

__all__ = ["UNIT_STATES", "resume_point", "states_at", "stored_point", "unit_states"]

UNIT_STATES: Final = ("completed", "failed", "blocked", "in_flight", "pending")
# A stored ledger may hold anything as a finished unit's state: what is not an outcome
# counts as failed, as the report reads it.
_OUTCOME_STATES: Final = {state.value: state for state in OutcomeState}


class _Unit:
    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id
        self.attempt = 1
        self.candidates: tuple[WorkerResult, ...] = ()
        self.proofs: dict[str, WorkerResult | None] = {}
        self.accepted: str | None = None
        self.approvals = 0
        self.outcome: UnitOutcome | None = None
        # Calls of adapters not safe to re-run that started and have not ended, by
        # (candidate, lane, attempt, call).
        self.started: dict[tuple[str | None, str | None, int | None, object], str] = {}


# The lanes whose calls each event settles (`rework`: the attempt they belonged to ended).
_SETTLES: Final[Mapping[str, frozenset[str | None]]] = {
    "candidates_recorded": frozenset({"coder", "reducer"}),
    "proofs_recorded": frozenset({"applier", "prover"}),
    "delivery_started": frozenset({"fixer"}),
    "rework": frozenset({"coder", "reducer", "applier", "prover", "fixer", "locksmith", None}),
}


def _text(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


_CODES: Final = {code.value: code for code in FailureCode}
_DELIVERIES: Final = {decision.value: decision for decision in Decision}


def _finished(event: LedgerEvent, unit: _Unit, *, strict: bool) -> UnitOutcome:
    data = event.data
    state = _OUTCOME_STATES.get(_text(data, "state") or "", OutcomeState.FAILED)
    code = _text(data, "failure_code")
    delivery = _text(data, "delivery")
    # A stored value mesh does not know reads as unknown; only a resume, which would
    # carry it on as the unit's outcome, refuses it.
    for name, value, known in (("failure code", code, _CODES), ("delivery", delivery, _DELIVERIES)):
        if strict and value and value not in known:
            raise MeshError(f"event {event.seq}: unknown {name} '{one_line(value, 80)}'")
    return UnitOutcome(
        unit_id=unit.unit_id,
        state=state,
        attempts=event.attempt or unit.attempt,
        failure_code=_CODES.get(code or ""),
        evidence=_text(data, "evidence") or "",
        accepted_candidate=_text(data, "accepted_candidate"),
        artifact_ref=_text(data, "artifact_ref"),
        delivery=_DELIVERIES.get(delivery or ""),
    )


def _record(event: LedgerEvent, document: object) -> WorkerResult:
    try:
        return parse_worker_result(document)
    except InvalidOutputSchema as exc:
        raise MeshError(f"event {event.seq}: a recorded result is unreadable: {exc}") from exc


def _candidates(event: LedgerEvent) -> tuple[WorkerResult, ...]:
    documents = event.data.get("candidates")
    if not isinstance(documents, list):
        raise MeshError(f"event {event.seq}: candidates_recorded without a candidate list")
    return tuple(_record(event, document) for document in documents)


def _proofs(event: LedgerEvent, unit: _Unit) -> dict[str, WorkerResult | None]:
    documents = event.data.get("proofs")
    if not isinstance(documents, dict) or set(documents) != {
        c.candidate_id for c in unit.candidates
    }:
        raise MeshError(f"event {event.seq}: proofs_recorded without one proof per candidate")
    return {
        str(cid): None if document is None else _record(event, document)
        for cid, document in documents.items()
    }


def _apply(unit: _Unit, event: LedgerEvent, *, strict: bool) -> None:
    """Fold one event of an unfinished unit into its state."""
    name = event.event
    if name in {"unit_started", "rework"} and event.attempt:
        unit.attempt = event.attempt
    if name in {"rework", "candidates_recorded"}:
        unit.candidates, unit.proofs, unit.accepted = (), {}, None
    # A call of an adapter not safe to re-run is settled once its stage's results are
    # recorded (a resume does not make it again); until then, finished or not, a resume
    # would make it again.
    if settled := _SETTLES.get(name):
        unit.started = {key: what for key, what in unit.started.items() if key[1] not in settled}
    if name == "candidates_recorded":
        unit.candidates = _candidates(event)
    elif name == "proofs_recorded":
        unit.proofs = _proofs(event, unit)
    elif name == "call_started":
        lane = event.lane.value if event.lane else None
        key = (event.candidate_id, lane, event.attempt, event.data.get("call"))
        unit.started[key] = (
            f"the {lane} call for {event.candidate_id} (attempt {event.attempt}, "
            f"call {event.data.get('call')})"
        )
    elif name == "delivery_started":
        unit.accepted = event.candidate_id
        approvals = event.data.get("approvals")
        unit.approvals = approvals if type(approvals) is int else 0
    elif name == "unit_finished":
        unit.outcome = _finished(event, unit, strict=strict)
    elif name == "unit_blocked":
        unit.outcome = UnitOutcome(
            unit_id=unit.unit_id,
            state=OutcomeState.BLOCKED,
            failure_code=FailureCode.REQUIRES_CLARIFICATION,
            evidence=f"dependency {event.data.get('blocked_by')} did not complete",
            blocked_by=_text(event.data, "blocked_by"),
        )


def _replay(events: Iterable[LedgerEvent], *, strict: bool) -> tuple[dict[str, _Unit], int]:
    units: dict[str, _Unit] = {}
    last_seq = 0
    for event in events:
        last_seq = max(last_seq, event.seq)
        if event.unit_id is None:
            continue
        unit = units.setdefault(event.unit_id, _Unit(event.unit_id))
        if unit.outcome is None:  # a finished unit stays finished
            _apply(unit, event, strict=strict)
    return units, last_seq


def resume_point(events: Iterable[LedgerEvent]) -> ResumePoint:
    """
    Where a stopped run stands, from its events: checkpoints and the next event number.

    A finished unit's failure code or delivery that mesh does not know reads
    as unknown (None).

    .. versionadded:: 0.1.0
    """
    return _point(events, strict=False)


def stored_point(events: Iterable[LedgerEvent]) -> ResumePoint:
    """
    `resume_point` for a run about to continue: an outcome it cannot read is refused.

    Raises:
        MeshError: Naming the event whose recorded values are unreadable.
    """
    return _point(events, strict=True)


def _point(events: Iterable[LedgerEvent], *, strict: bool) -> ResumePoint:
    history = tuple(events)
    units, last_seq = _replay(history, strict=strict)
    checkpoints = {
        unit_id: UnitCheckpoint(
            unit_id=unit_id,
            attempt=unit.attempt,
            candidates=unit.candidates,
            proofs=unit.proofs,
            accepted=unit.accepted,
            approvals=unit.approvals,
            outcome=unit.outcome,
            interrupted=tuple(unit.started.values()),
        )
        for unit_id, unit in units.items()
    }
    changes = [event.data for event in history if event.event == "plan_changed"]
    return ResumePoint(
        checkpoints=checkpoints,
        next_seq=last_seq + 1,
        history=history,
        plan_change=changes[-1] if changes else None,
    )


def unit_states(events: Iterable[LedgerEvent], unit_ids: Iterable[str]) -> dict[str, str]:
    """
    Each unit's state in a recorded run: completed, failed, blocked, in_flight or pending.

    .. versionadded:: 0.1.0
    """
    return states_at(resume_point(events), unit_ids)


def states_at(point: ResumePoint, unit_ids: Iterable[str]) -> dict[str, str]:
    """Each unit's state at a resume point (see `unit_states`)."""
    return {
        unit_id: (
            "pending"
            if (checkpoint := point.checkpoints.get(unit_id)) is None
            else checkpoint.outcome.state
            if checkpoint.outcome is not None
            else "in_flight"
        )
        for unit_id in unit_ids
    }
