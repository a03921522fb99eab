"""
The per-unit lifecycle as data: states, triggers, the transition table and its gates.

Pure: no I/O, no anyio. `UnitProgress` holds the evidence a unit has gathered;
each gate is a plain function of it, so the table can be checked exhaustively
and driven by any executor. ``_machine.py`` turns the table into a
``transitions`` machine; the scheduler gathers the evidence.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ..contracts._enums import QUORUM_BY_RISK, Decision, FailureCode, ProofStatus
from ..contracts._records import Unit, WorkerResult

__all__ = [
    "GATES",
    "TERMINAL_STATES",
    "TRANSITION_TABLE",
    "Transition",
    "Trigger",
    "UnitProgress",
    "UnitState",
    "joined_evidence",
]

_PROBLEMS_SHOWN: Final = 10
"""Problems written out in a unit's evidence; the others are counted."""
_PROBLEM_CHARS: Final = 500
"""Characters of one problem kept in a unit's evidence (an adapter's text may be long)."""


class UnitState(enum.StrEnum):
    """Where a unit is in its lifecycle."""

    PLANNED = "planned"
    """Waiting for candidates (first attempt, or again after rework)."""
    CANDIDATES_READY = "candidates_ready"
    """Enough valid candidates were written."""
    PROOFS_READY = "proofs_ready"
    """Every candidate has a final proof record (pass or fail)."""
    FIXER_ACCEPT = "fixer_accept"
    """The fixer quorum accepted one proven candidate."""
    COMPLETED = "completed"
    """The integrator delivered the accepted candidate (terminal)."""
    FAILED = "failed"
    """A gate could not be met; exactly one failure code (terminal)."""


TERMINAL_STATES: Final = frozenset({UnitState.COMPLETED, UnitState.FAILED})


class Trigger(enum.StrEnum):
    """What moves a unit from one state to the next."""

    CANDIDATES_GENERATED = "candidates_generated"
    """The authors returned; needs enough valid candidates."""
    PROOFS_RECORDED = "proofs_recorded"
    """Every candidate went through locksmith, applier and prover."""
    QUORUM_REACHED = "quorum_reached"
    """Enough fixers approved the same proven candidate."""
    DELIVERED = "delivered"
    """The integrator delivered the accepted candidate."""
    REWORK = "rework"
    """Start the next attempt; needs attempts left."""
    FAIL = "fail"
    """End the unit with its failure code."""


@attrs.define(eq=False, kw_only=True)
class UnitProgress:
    """
    The mutable evidence of one unit; written only by the unit's own task.

    ``state`` is read and written by the state machine.
    """

    unit: Unit
    max_attempts: int = 2
    width: int = 3
    state: str = UnitState.PLANNED.value
    attempt: int = 1
    candidates: list[WorkerResult] = attrs.Factory(list)
    proofs: dict[str, WorkerResult | None] = attrs.Factory(dict)
    """Final proof record per candidate id (None: the patch did not apply)."""
    approvals: dict[str, int] = attrs.Factory(dict)
    """Fixer approvals per candidate id in this attempt."""
    accepted: str | None = None
    delivery: WorkerResult | None = None
    failure_code: FailureCode | None = None
    evidence: str = ""
    """The failure's own evidence (what ended the unit)."""
    problems: dict[str, None] = attrs.Factory(dict)
    """Every problem the unit met, each once, in the order met (the keys)."""

    def note(self, problem: str) -> None:
        """Record a problem the unit met (a problem met before keeps its place)."""
        self.problems.setdefault(problem, None)

    def outcome_evidence(self) -> str:
        """The unit's evidence: its failure's own first, then every other problem it met."""
        if not self.problems:
            return self.evidence
        return joined_evidence([self.evidence, *self.problems] if self.evidence else self.problems)

    @property
    def required_candidates(self) -> int:
        """Valid candidates needed: 2, or fewer when the budget narrowed the width."""
        return min(2, self.width)

    @property
    def quorum(self) -> int:
        """Fixer approvals needed for this unit's risk tier."""
        return QUORUM_BY_RISK[self.unit.risk_tier]

    def start_next_attempt(self) -> None:
        """Forget this attempt's evidence (called on rework)."""
        self.attempt += 1
        self.candidates.clear()
        self.proofs.clear()
        self.approvals.clear()
        self.accepted = None


def joined_evidence(problems: Iterable[str]) -> str:
    """
    Problems as one evidence text: in order, each once, ``first | second | third``.

    Bounded: each problem is cut at 500 characters, and past the tenth the
    others are only counted (``... | and 4 more``).

    >>> joined_evidence(["coder: RuntimeError: boom", "pytest: 1 failed", "pytest: 1 failed"])
    'coder: RuntimeError: boom | pytest: 1 failed'
    """
    distinct = list(dict.fromkeys(problems))
    shown = [
        problem if len(problem) <= _PROBLEM_CHARS else f"{problem[: _PROBLEM_CHARS - 1]}…"
        for problem in distinct[:_PROBLEMS_SHOWN]
    ]
    if (more := len(distinct) - _PROBLEMS_SHOWN) > 0:
        shown.append(f"and {more} more")
    return " | ".join(shown)


def enough_candidates(progress: UnitProgress) -> bool:
    """At least ``required_candidates`` candidates carry a patch."""
    valid = [c for c in progress.candidates if c.decision is Decision.ACCEPT and c.patch]
    return len(valid) >= progress.required_candidates


def proofs_final(progress: UnitProgress) -> bool:
    """Every candidate has a final proof record (pass, fail, or did not apply)."""
    return bool(progress.candidates) and all(
        c.candidate_id in progress.proofs for c in progress.candidates
    )


def _proof_passed(progress: UnitProgress, candidate_id: str | None) -> bool:
    proof = progress.proofs.get(candidate_id or "")
    return proof is not None and proof.proof_status is ProofStatus.PASS


def quorum_met(progress: UnitProgress) -> bool:
    """One candidate with a passing proof has the risk tier's quorum of approvals."""
    return _proof_passed(progress, progress.accepted) and (
        progress.approvals.get(progress.accepted or "", 0) >= progress.quorum
    )


def delivered(progress: UnitProgress) -> bool:
    """The accepted, proven candidate was delivered by the integrator."""
    delivery = progress.delivery
    return (
        quorum_met(progress)
        and delivery is not None
        and delivery.decision in {Decision.INTEGRATED_PATCH, Decision.INTEGRATED_COMMIT}
    )


def attempts_remain(progress: UnitProgress) -> bool:
    """Another attempt is within the attempt budget."""
    return progress.attempt < progress.max_attempts


def has_failure_code(progress: UnitProgress) -> bool:
    """Exactly one failure code and its evidence anchor are recorded."""
    return progress.failure_code is not None and bool(progress.evidence)


@attrs.frozen(kw_only=True)
class Transition:
    """One row of the transition table."""

    trigger: Trigger
    sources: tuple[UnitState, ...]
    dest: UnitState
    gate: str


_ACTIVE: Final = (
    UnitState.PLANNED,
    UnitState.CANDIDATES_READY,
    UnitState.PROOFS_READY,
    UnitState.FIXER_ACCEPT,
)

TRANSITION_TABLE: Final = (
    Transition(
        trigger=Trigger.CANDIDATES_GENERATED,
        sources=(UnitState.PLANNED,),
        dest=UnitState.CANDIDATES_READY,
        gate="enough_candidates",
    ),
    Transition(
        trigger=Trigger.PROOFS_RECORDED,
        sources=(UnitState.CANDIDATES_READY,),
        dest=UnitState.PROOFS_READY,
        gate="proofs_final",
    ),
    Transition(
        trigger=Trigger.QUORUM_REACHED,
        sources=(UnitState.PROOFS_READY,),
        dest=UnitState.FIXER_ACCEPT,
        gate="quorum_met",
    ),
    Transition(
        trigger=Trigger.DELIVERED,
        sources=(UnitState.FIXER_ACCEPT,),
        dest=UnitState.COMPLETED,
        gate="delivered",
    ),
    Transition(
        trigger=Trigger.REWORK, sources=_ACTIVE, dest=UnitState.PLANNED, gate="attempts_remain"
    ),
    Transition(
        trigger=Trigger.FAIL, sources=_ACTIVE, dest=UnitState.FAILED, gate="has_failure_code"
    ),
)
"""Every legal move. Anything else (including any trigger from a terminal state) is illegal."""

GATES: Final[Mapping[str, Callable[[UnitProgress], bool]]] = MappingProxyType(
    {
        "enough_candidates": enough_candidates,
        "proofs_final": proofs_final,
        "quorum_met": quorum_met,
        "delivered": delivered,
        "attempts_remain": attempts_remain,
        "has_failure_code": has_failure_code,
    }
)
"""The gate guarding each transition, by name."""
