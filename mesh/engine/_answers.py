"""
Answer builders: an adapter's answer as a checked `WorkerResult`, built from its request.

Every field the request already knows (unit id, candidate id, lane, triplet
index, write scope, risk tier, base commit, quorum target, proof attempt) is
taken from it, so only what the adapter supplies is checked here: exact types,
no lone surrogates, and the lane rule each builder's decision carries; the
request's own numbers the rules constrain (lane, proof attempt, quorum target)
are checked too. The unit is taken as the engine made it (checked when the
plan was read). The result is registered as checked, so the engine takes it
without a second check; a builder's output passes the full contract check too
(a test holds them to it). Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from ..contracts._contract import trusted
from ..contracts._convert import fast_conforms
from ..contracts._enums import QUORUM_BY_RISK, Decision, Lane, ProofStatus
from ..contracts._errors import InvalidOutputSchema
from ..contracts._records import ProofEvidence, ReduceRecord, Unit, WorkerResult
from ..contracts._text import first_surrogate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._roles import (
        AdjudicationRequest,
        ApplyRequest,
        AuthorRequest,
        DeliveryRequest,
        LeaseRequest,
        ProofRequest,
    )

__all__ = ["applied", "candidate", "delivered", "lease", "proof", "verdict"]

_NO_EVIDENCE: Final = ProofEvidence(command="", key_line="", exit_code=0)
_LEASE_DECISIONS: Final = (Decision.GRANT, Decision.DENY, Decision.RECLAIM)


def _text(name: str, value: object, *, required: bool = False) -> str:
    """``value`` when it is a string of Unicode text (non-blank when required)."""
    if type(value) is not str:
        raise InvalidOutputSchema([f"$.{name}: expected string, got {type(value).__name__}"])
    if first_surrogate(value) is not None:
        raise InvalidOutputSchema([f"$.{name}: not valid Unicode (a lone surrogate)"])
    if required and not value.strip():
        raise InvalidOutputSchema([f"$.{name}: must not be blank"])
    return value


def _flag(name: str, value: object) -> None:
    if type(value) is not bool:
        raise InvalidOutputSchema([f"{name}: expected True or False, got {value!r}"])


def _optional_text(name: str, value: object) -> str | None:
    return None if value is None else _text(name, value)


def _reduce_record(name: str, value: object) -> None:
    """Refuse a reduce record whose fields are not of their exact types or not Unicode."""
    if not fast_conforms(value, ReduceRecord):
        raise InvalidOutputSchema([f"$.{name}: expected a ReduceRecord with exact field types"])
    # Every field of a conforming reduce record is a string or a tuple of strings.
    for field in attrs.fields(ReduceRecord):
        item = getattr(value, field.name)
        for text in item if type(item) is tuple else (item,):
            _text(f"{name}.{field.name}", text)


def _result(
    unit: Unit,
    *,
    candidate_id: str,
    lane: Lane,
    decision: Decision,
    triplet_index: int,
    proof_status: ProofStatus = ProofStatus.NOT_APPLICABLE,
    proof_attempts: int = 0,
    proof_evidence: ProofEvidence = _NO_EVIDENCE,
    **optional: object,
) -> WorkerResult:
    return trusted(
        WorkerResult(
            id=unit.id,
            candidate_id=candidate_id,
            triplet_index=triplet_index,
            lane=lane,
            decision=decision,
            proof_status=proof_status,
            write_scope=unit.write_scope or ("unknown",),
            risk_tier=unit.risk_tier,
            base_sha=unit.base_sha,
            proof_attempts=proof_attempts,
            proof_evidence=proof_evidence,
            **optional,  # type: ignore[arg-type]
        )
    )


def candidate(
    request: AuthorRequest,
    *,
    patch: str,
    notes: str | None = None,
    reduce_record: ReduceRecord | None = None,
    challenge_findings: Sequence[str] | None = None,
) -> WorkerResult:
    """A coder's or reducer's candidate patch (``accept``); a reducer's needs its record."""
    if request.lane is not Lane.CODER and request.lane is not Lane.REDUCER:
        problem = f"$.lane: a candidate comes from a coder or the reducer, not {request.lane!r}"
        raise InvalidOutputSchema([problem])
    if request.lane is Lane.REDUCER and reduce_record is None:
        raise InvalidOutputSchema(["$.reduce_record: a reducer's candidate needs a reduce_record"])
    if reduce_record is not None:
        _reduce_record("reduce_record", reduce_record)
    findings = None
    if challenge_findings is not None:
        findings = tuple(
            _text(f"challenge_findings[{index}]", finding)
            for index, finding in enumerate(challenge_findings)
        )
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=request.lane,
        decision=Decision.ACCEPT,
        triplet_index=request.triplet_index,
        patch=_text("patch", patch, required=True),
        notes=_optional_text("notes", notes),
        reduce_record=reduce_record,
        challenge_findings=findings,
    )


def lease(request: LeaseRequest, *, decision: Decision, lease_id: str, reason: str) -> WorkerResult:
    """A locksmith's answer: ``grant`` (with the lease's id), ``deny`` or ``reclaim``."""
    if all(decision is not allowed for allowed in _LEASE_DECISIONS):
        raise InvalidOutputSchema([f"$.decision: locksmith may not decide {decision!r}"])
    text = _text("notes", reason)
    if decision is Decision.GRANT and request.ttl_ms <= 0:
        raise InvalidOutputSchema(["$.ttl_ms: a granted lease needs ttl_ms > 0"])
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.LOCKSMITH,
        decision=decision,
        triplet_index=1,
        proof_evidence=ProofEvidence(command="", key_line=text, exit_code=0),
        lease_id=_text("lease_id", lease_id, required=decision is Decision.GRANT),
        ttl_ms=request.ttl_ms,
        notes=text,
    )


def applied(request: ApplyRequest, *, worktree_path: str) -> WorkerResult:
    """An applier's answer: the candidate applied cleanly in ``worktree_path``."""
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.APPLIER,
        decision=Decision.APPLIED,
        triplet_index=request.candidate.triplet_index,
        worktree_path=_text("worktree_path", worktree_path),
    )


def proof(
    request: ProofRequest,
    *,
    passed: bool,
    command: str = "",
    key_line: str = "",
    exit_code: int = 0,
) -> WorkerResult:
    """A prover's answer for this proof attempt: passed or failed, with what showed it."""
    if type(exit_code) is not int:
        raise InvalidOutputSchema(
            [f"$.proof_evidence.exit_code: expected integer, got {exit_code!r}"]
        )
    _flag("passed", passed)
    if request.proof_attempt not in (1, 2):
        problem = f"$.proof_attempts: a prover result needs 1 or 2, got {request.proof_attempt!r}"
        raise InvalidOutputSchema([problem])
    status = ProofStatus.PASS if passed else ProofStatus.FAIL
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.PROVER,
        decision=Decision.PASS if passed else Decision.FAIL,
        triplet_index=request.candidate.triplet_index,
        proof_status=status,
        proof_attempts=request.proof_attempt,
        proof_evidence=ProofEvidence(
            command=_text("proof_evidence.command", command),
            key_line=_text("proof_evidence.key_line", key_line),
            exit_code=exit_code,
        ),
    )


def verdict(request: AdjudicationRequest, *, select: str, notes: str | None = None) -> WorkerResult:
    """A fixer's approval of one proven candidate (decision ``accepted``)."""
    select = _text("selected_candidate", select, required=True)
    quorum = QUORUM_BY_RISK[request.unit.risk_tier]
    if request.quorum_target != quorum:
        problem = f"$.quorum_target: {request.unit.risk_tier.value} risk needs {quorum}"
        raise InvalidOutputSchema([f"{problem}, got {request.quorum_target!r}"])
    proven = {c.candidate_id for c, _ in request.proven}
    if select not in proven:
        raise InvalidOutputSchema([f"$.selected_candidate: {select!r} is not a proven candidate"])
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.FIXER,
        decision=Decision.ACCEPTED,
        triplet_index=request.fixer_index,
        proof_status=ProofStatus.PASS,
        selected_candidate=select,
        quorum_target=request.quorum_target,
        quorum_observed=request.quorum_target,
        notes=_optional_text("notes", notes),
    )


def delivered(request: DeliveryRequest, *, artifact_ref: str, commit: bool = False) -> WorkerResult:
    """An integrator's answer: the candidate delivered, as a patch or (``commit``) a commit."""
    _flag("commit", commit)
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.INTEGRATOR,
        decision=Decision.INTEGRATED_COMMIT if commit else Decision.INTEGRATED_PATCH,
        triplet_index=request.candidate.triplet_index,
        proof_status=ProofStatus.PASS,
        artifact_ref=_text("artifact_ref", artifact_ref, required=True),
    )
