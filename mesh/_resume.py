"""
A stopped run's state, rebuilt from its recorded events. Pure: no I/O.

The event log is the source of truth: ``unit_finished`` and ``unit_blocked``
end a unit, ``rework`` starts its next attempt, ``candidates_recorded`` keeps
the candidates of the current attempt so that a restart proves them again
instead of writing them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from ._contract import parse_worker_result
from ._enums import Decision, FailureCode
from ._errors import InvalidOutputSchema, MeshError
from ._events import LedgerEvent
from ._records import WorkerResult
from ._scheduler import ResumePoint, UnitCheckpoint
from ._summary import UnitOutcome

__all__ = ["UNIT_STATES", "resume_point", "unit_states"]

UNIT_STATES: Final = ("completed", "failed", "blocked", "in_flight", "pending")


class _Unit:
    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id
        self.attempt = 1
        self.state = "in_flight"
        self.candidates: tuple[WorkerResult, ...] = ()
        self.outcome: UnitOutcome | None = None
        self.delivering = False


def _text(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _finished(event: LedgerEvent, unit: _Unit) -> UnitOutcome:
    data = event.data
    state = _text(data, "state") or "failed"
    code = _text(data, "failure_code")
    delivery = _text(data, "delivery")
    return UnitOutcome(
        unit_id=unit.unit_id,
        state=state,
        attempts=event.attempt or unit.attempt,
        failure_code=FailureCode(code) if code else None,
        evidence=_text(data, "evidence") or "",
        accepted_candidate=_text(data, "accepted_candidate"),
        artifact_ref=_text(data, "artifact_ref"),
        delivery=Decision(delivery) if delivery else None,
    )


def _candidates(event: LedgerEvent) -> tuple[WorkerResult, ...]:
    documents = event.data.get("candidates")
    if not isinstance(documents, list):
        raise MeshError(f"event {event.seq}: candidates_recorded without a candidate list")
    try:
        return tuple(parse_worker_result(document) for document in documents)
    except InvalidOutputSchema as exc:
        raise MeshError(f"event {event.seq}: a recorded candidate is unreadable: {exc}") from exc


def _replay(events: Iterable[LedgerEvent]) -> tuple[dict[str, _Unit], int]:
    units: dict[str, _Unit] = {}
    last_seq = 0
    for event in events:
        last_seq = max(last_seq, event.seq)
        if event.unit_id is None:
            continue
        unit = units.setdefault(event.unit_id, _Unit(event.unit_id))
        if unit.outcome is not None:
            continue  # a finished unit stays finished
        if event.event == "unit_started" and event.attempt:
            unit.attempt = event.attempt
        elif event.event == "rework" and event.attempt:
            unit.attempt = event.attempt
            unit.candidates = ()
        elif event.event == "candidates_recorded":
            unit.candidates = _candidates(event)
        elif event.event == "delivery_started":
            unit.delivering = True
        elif event.event == "unit_finished":
            unit.outcome = _finished(event, unit)
            unit.state = unit.outcome.state
        elif event.event == "unit_blocked":
            unit.outcome = UnitOutcome(
                unit_id=unit.unit_id,
                state="blocked",
                failure_code=FailureCode.REQUIRES_CLARIFICATION,
                evidence=f"dependency {event.data.get('blocked_by')} did not complete",
                blocked_by=_text(event.data, "blocked_by"),
            )
            unit.state = "blocked"
    return units, last_seq


def resume_point(events: Iterable[LedgerEvent]) -> ResumePoint:
    """
    Where a stopped run stands, from its events: checkpoints and the next event number.

    .. versionadded:: 0.1.0
    """
    history = tuple(events)
    units, last_seq = _replay(history)
    checkpoints = {
        unit_id: UnitCheckpoint(
            unit_id=unit_id,
            attempt=unit.attempt,
            candidates=unit.candidates,
            outcome=unit.outcome,
        )
        for unit_id, unit in units.items()
    }
    return ResumePoint(checkpoints=checkpoints, next_seq=last_seq + 1, history=history)


def unit_states(events: Iterable[LedgerEvent], unit_ids: Iterable[str]) -> dict[str, str]:
    """
    Each unit's state in a recorded run: completed, failed, blocked, in_flight or pending.

    .. versionadded:: 0.1.0
    """
    units, _ = _replay(events)
    return {
        unit_id: units[unit_id].state if unit_id in units else "pending" for unit_id in unit_ids
    }
