"""What a run returns and resumes from: outcomes, statistics, checkpoints, the learning line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from ..contracts._enums import FailureCode
from ..contracts._errors import FileAccessError, RunFailed, UnitFailed
from ..contracts._events import LedgerEvent
from ..contracts._records import WorkerResult
from ._lifecycle import UnitState
from ._summary import OutcomeState, RunMetrics, UnitOutcome, pick_learning, render_ledger

__all__ = ["ResumePoint", "RunResult", "RunStatistics", "UnitCheckpoint", "append_learning"]


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
    interrupted: tuple[str, ...] = ()
    """Calls of adapters not safe to re-run (`mesh.not_rerun_safe`) made in a stage
    whose results were not recorded: the unit fails instead of calling them again."""


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
    plan_change: Mapping[str, Any] | None = None
    """The record of the run's last plan change (``plan_changed``), if its plan changed:
    a resume runs that plan."""


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
    by_state: Mapping[UnitState | OutcomeState, int] = attrs.field(hash=False)
    """Units per state: in flight by their `UnitState`, finished by their `OutcomeState`."""
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

    def _with_state(self, state: OutcomeState) -> tuple[UnitOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.state == state)

    @property
    def completed(self) -> tuple[UnitOutcome, ...]:
        """Units delivered."""
        return self._with_state(OutcomeState.COMPLETED)

    @property
    def failed(self) -> tuple[UnitOutcome, ...]:
        """Units that ended failed, each with one failure code."""
        return self._with_state(OutcomeState.FAILED)

    @property
    def blocked(self) -> tuple[UnitOutcome, ...]:
        """Units never started because a dependency failed."""
        return self._with_state(OutcomeState.BLOCKED)

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
            if o.state != OutcomeState.COMPLETED
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
