"""
Answer builders: an adapter's answer as a checked `WorkerResult`, built from its request.

One builder per decision a lane may make (`mesh.answers` publishes them; the
engine's lease table and `mesh.testing.answer` use them too). Those whose
parameters are the public ones are published as they are, so their docstrings
are the API reference's; `candidate` (which also takes a whole reduce record)
and `lease` (any `Decision`) have public twins that call them. Every field the
request already knows (unit id, candidate id, lane, triplet index, write
scope, risk tier, base commit, quorum target, proof attempt) is taken from it,
so only what the adapter supplies is checked here: exact types, no lone
surrogates, and the lane rule each builder's decision carries; the request's
own numbers the rules constrain (lane, proof attempt, quorum target) are
checked too. The unit is taken as the engine made it (checked when the plan
was read). The result is registered as checked, so the engine takes it without
a second check; a builder's output passes the full contract check too (a test
holds them to it). A reason (a refusal's, a denial's) is written both as
``notes`` and as the evidence's key line, which the ledger shows. Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from ..contracts._contract import trusted
from ..contracts._convert import fast_conforms
from ..contracts._enums import (
    QUORUM_BY_RISK,
    Decision,
    DeliveryMode,
    FailureCode,
    Lane,
    ProofStatus,
)
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

__all__ = [
    "applied",
    "apply_failed",
    "blocked_delivery",
    "blocked_safety",
    "candidate",
    "checked_reduce_record",
    "delivered",
    "lease",
    "no_diff",
    "proof",
    "reduction",
    "reject",
    "rework",
    "verdict",
]

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


def _optional_text(name: str, value: object) -> str | None:
    return None if value is None else _text(name, value)


def _texts(name: str, value: object) -> tuple[str, ...]:
    """``value`` as a tuple, when it is a list or tuple of Unicode strings (a string is not)."""
    if not isinstance(value, list | tuple):
        problem = f"$.{name}: expected a list of strings, got {type(value).__name__}"
        raise InvalidOutputSchema([problem])
    return tuple(_text(f"{name}[{index}]", item) for index, item in enumerate(value))


def _flag(name: str, value: object) -> None:
    if type(value) is not bool:
        raise InvalidOutputSchema([f"{name}: expected True or False, got {value!r}"])


def _integer(name: str, value: object) -> int:
    if type(value) is not int:
        raise InvalidOutputSchema([f"$.{name}: expected integer, got {value!r}"])
    return value


def _failure_code(value: object) -> FailureCode | None:
    if value is not None and type(value) is not FailureCode:
        raise InvalidOutputSchema([f"$.failure_code: expected a mesh.FailureCode, got {value!r}"])
    return value


def _reason(value: object) -> tuple[str, ProofEvidence]:
    """What a reason fills: ``notes``, and the evidence whose key line the ledger shows."""
    text = _text("notes", value, required=True)
    return text, ProofEvidence(command="", key_line=text, exit_code=0)


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
    base_sha: str | None = None,
    write_scope: tuple[str, ...] | None = None,
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
            write_scope=(unit.write_scope if write_scope is None else write_scope) or ("unknown",),
            risk_tier=unit.risk_tier,
            base_sha=unit.base_sha if base_sha is None else base_sha,
            proof_attempts=proof_attempts,
            proof_evidence=proof_evidence,
            **optional,  # type: ignore[arg-type]
        )
    )


# -- coder and reducer -------------------------------------------------------------


def _author_lane(request: AuthorRequest) -> None:
    if request.lane is not Lane.CODER and request.lane is not Lane.REDUCER:
        problem = f"$.lane: a candidate comes from a coder or the reducer, not {request.lane!r}"
        raise InvalidOutputSchema([problem])


def _author(
    request: AuthorRequest,
    decision: Decision,
    *,
    base_sha: str | None,
    challenge_findings: Sequence[str] | None,
    notes: str | None,
    proof_evidence: ProofEvidence = _NO_EVIDENCE,
    patch: str | None = None,
    reduce_record: ReduceRecord | None = None,
) -> WorkerResult:
    """An author's answer (its lane already checked), at the request's or the given commit."""
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=request.lane,
        decision=decision,
        triplet_index=request.triplet_index,
        base_sha=None if base_sha is None else _text("base_sha", base_sha, required=True),
        proof_evidence=proof_evidence,
        challenge_findings=None
        if challenge_findings is None
        else _texts("challenge_findings", challenge_findings),
        notes=notes,
        patch=patch,
        reduce_record=reduce_record,
    )


def _refusal(
    request: AuthorRequest,
    decision: Decision,
    reason: str,
    challenge_findings: Sequence[str] | None,
    base_sha: str | None,
) -> WorkerResult:
    """An author's answer that offers no patch (``reject``, ``no_diff``), and its reason."""
    _author_lane(request)
    notes, evidence = _reason(reason)
    return _author(
        request,
        decision,
        base_sha=base_sha,
        challenge_findings=challenge_findings,
        proof_evidence=evidence,
        notes=notes,
    )


def candidate(
    request: AuthorRequest,
    *,
    patch: str,
    notes: str | None = None,
    reduce_record: ReduceRecord | None = None,
    challenge_findings: Sequence[str] | None = None,
    base_sha: str | None = None,
) -> WorkerResult:
    """A coder's or reducer's candidate patch (``accept``); a reducer's needs its record."""
    _author_lane(request)
    if request.lane is Lane.REDUCER and reduce_record is None:
        problem = "$.reduce_record: a reducer's candidate needs a reduce_record"
        raise InvalidOutputSchema([f"{problem} (build it with mesh.answers.reduction)"])
    if reduce_record is not None:
        _reduce_record("reduce_record", reduce_record)
    return _author(
        request,
        Decision.ACCEPT,
        base_sha=base_sha,
        challenge_findings=challenge_findings,
        patch=_text("patch", patch, required=True),
        notes=_optional_text("notes", notes),
        reduce_record=reduce_record,
    )


def checked_reduce_record(
    *,
    target_abstraction: str,
    replacement_primitive: str,
    complexity_delta: str,
    invariants_preserved: Sequence[str],
    rollback_plan: str,
) -> ReduceRecord:
    """A reducer's record, each field checked (``$.reduce_record.FIELD``)."""
    name = "reduce_record"
    return ReduceRecord(
        target_abstraction=_text(f"{name}.target_abstraction", target_abstraction),
        replacement_primitive=_text(f"{name}.replacement_primitive", replacement_primitive),
        complexity_delta=_text(f"{name}.complexity_delta", complexity_delta),
        invariants_preserved=_texts(f"{name}.invariants_preserved", invariants_preserved),
        rollback_plan=_text(f"{name}.rollback_plan", rollback_plan),
    )


def reduction(
    request: AuthorRequest,
    *,
    patch: str,
    target_abstraction: str,
    replacement_primitive: str,
    complexity_delta: str,
    invariants_preserved: Sequence[str],
    rollback_plan: str,
    notes: str | None = None,
    challenge_findings: Sequence[str] | None = None,
    base_sha: str | None = None,
) -> WorkerResult:
    r"""
    A reducer's candidate (decision ``accept``) with its reduce record.

    The reducer writes the simplifying candidate; its reduce record says what
    the simplification is, so the fixers can weigh it against the coders'
    candidates. The five record fields are written as the answer's
    ``reduce_record`` (errors name them ``$.reduce_record.FIELD``).

    Args:
        request: The `mesh.AuthorRequest` answered.
        patch: The unified diff (not blank).
        target_abstraction: What the patch removes or simplifies (a class, a
            layer, a duplicated routine).
        replacement_primitive: What takes its place (a function, a standard
            library call, nothing).
        complexity_delta: How much simpler the code gets, as text
            (``"-40 lines"``, ``"3 classes -> 1"``).
        invariants_preserved: The behaviours the patch keeps, one per item.
        rollback_plan: How to undo the change if it proves wrong.
        notes: Anything the fixers should know about the candidate.
        challenge_findings: Problems found in the unit itself.
        base_sha: The commit the patch was written against; default the
            request's ``unit.base_sha``.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value (a string for
            ``invariants_preserved`` too), or a request for another lane.

    >>> import mesh, mesh.answers
    >>> request = mesh.AuthorRequest(
    ...     unit=mesh.Unit(id="u1", objective="simplify retries"),
    ...     lane=mesh.Lane.REDUCER,
    ...     candidate_id="u1-reducer-3",
    ...     triplet_index=3,
    ...     attempt=1,
    ... )
    >>> answer = mesh.answers.reduction(
    ...     request,
    ...     patch="--- a/retry.py\n+++ b/retry.py\n",
    ...     target_abstraction="three copies of the retry loop",
    ...     replacement_primitive="one retry() helper",
    ...     complexity_delta="-40 lines",
    ...     invariants_preserved=["same attempts", "same backoff"],
    ...     rollback_plan="revert the patch",
    ... )
    >>> answer.reduce_record.invariants_preserved
    ('same attempts', 'same backoff')

    .. versionadded:: 0.1.0
    """
    _author_lane(request)
    record = checked_reduce_record(
        target_abstraction=target_abstraction,
        replacement_primitive=replacement_primitive,
        complexity_delta=complexity_delta,
        invariants_preserved=invariants_preserved,
        rollback_plan=rollback_plan,
    )
    return candidate(
        request,
        patch=patch,
        notes=notes,
        reduce_record=record,
        challenge_findings=challenge_findings,
        base_sha=base_sha,
    )


def reject(
    request: AuthorRequest,
    *,
    reason: str,
    challenge_findings: Sequence[str] | None = None,
    base_sha: str | None = None,
) -> WorkerResult:
    """
    A coder's or reducer's refusal (decision ``reject``): the unit cannot be done as specified.

    The engine counts a rejection as backpressure; a unit left with too few
    candidates is planned again (``requires_clarification`` once its attempts
    are used up).

    Args:
        request: The `mesh.AuthorRequest` answered.
        reason: Why (not blank): written as ``notes`` and as the evidence's
            key line, which the ledger shows.
        challenge_findings: The problems found in the unit, one per item.
        base_sha: The commit looked at; default the request's ``unit.base_sha``.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value, or a request for another lane.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def coder(request: mesh.AuthorRequest) -> mesh.WorkerResult:
    ...     return mesh.answers.reject(request, reason="the objective contradicts an invariant")
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> mesh.run(plan, roles=fake_roles(coder=coder), max_attempts=1).outcomes[0].failure_code
    <FailureCode.REQUIRES_CLARIFICATION: 'requires_clarification'>

    .. versionadded:: 0.1.0
    """
    return _refusal(request, Decision.REJECT, reason, challenge_findings, base_sha)


def no_diff(
    request: AuthorRequest,
    *,
    reason: str,
    challenge_findings: Sequence[str] | None = None,
    base_sha: str | None = None,
) -> WorkerResult:
    """
    A coder's or reducer's ``no_diff``: nothing needs to change.

    Args:
        request: The `mesh.AuthorRequest` answered.
        reason: Why nothing needs to change (not blank): written as ``notes``
            (the contract requires it) and as the evidence's key line.
        challenge_findings: Problems found in the unit, one per item.
        base_sha: The commit looked at; default the request's ``unit.base_sha``.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value, or a request for another lane.

    >>> import mesh, mesh.answers
    >>> request = mesh.AuthorRequest(
    ...     unit=mesh.Unit(id="u1", objective="add a flag"),
    ...     lane=mesh.Lane.CODER,
    ...     candidate_id="u1-coder-1",
    ...     triplet_index=1,
    ...     attempt=1,
    ... )
    >>> mesh.answers.no_diff(request, reason="the flag exists already").notes
    'the flag exists already'

    .. versionadded:: 0.1.0
    """
    return _refusal(request, Decision.NO_DIFF, reason, challenge_findings, base_sha)


# -- locksmith, applier, prover ----------------------------------------------------


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
        write_scope=request.write_scope,
        proof_evidence=ProofEvidence(command="", key_line=text, exit_code=0),
        lease_id=_text("lease_id", lease_id, required=decision is Decision.GRANT),
        ttl_ms=request.ttl_ms,
        notes=text,
    )


def applied(
    request: ApplyRequest,
    *,
    worktree_path: str | None = None,
    command: str = "",
    evidence: str = "",
) -> WorkerResult:
    """
    An applier's ``applied``: the candidate's patch applied cleanly.

    The prover receives this answer (``ProofRequest.applied``) and runs the
    proof where it says. The triplet index and base commit are the candidate's.

    Args:
        request: The `mesh.ApplyRequest` answered.
        worktree_path: Where the patch was applied (the prover runs there).
        command: The command that applied it (``git apply``).
        evidence: The one output line that shows it applied. Given a
            ``command`` or ``evidence``, the answer carries them as its
            ``apply_evidence`` too.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def applier(request: mesh.ApplyRequest) -> mesh.WorkerResult:
    ...     return mesh.answers.applied(
    ...         request, worktree_path=f"/tmp/{request.candidate_id}", command="git apply"
    ...     )
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> print(mesh.run(plan, roles=fake_roles(applier=applier)).outcomes[0].state)
    completed

    .. versionadded:: 0.1.0
    """
    shown = ProofEvidence(
        command=_text("apply_evidence.command", command),
        key_line=_text("apply_evidence.key_line", evidence),
        exit_code=0,
    )
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.APPLIER,
        decision=Decision.APPLIED,
        triplet_index=request.candidate.triplet_index,
        base_sha=request.candidate.base_sha,
        proof_evidence=shown,
        apply_evidence=shown if command or evidence else None,
        worktree_path=_optional_text("worktree_path", worktree_path),
    )


def apply_failed(
    request: ApplyRequest,
    *,
    reason: str,
    command: str = "",
    exit_code: int = 1,
    failure_code: FailureCode | None = None,
) -> WorkerResult:
    """
    An applier's ``apply_failed``: the patch did not apply, or left the write scope.

    The candidate gets no proof. When no candidate of the unit is proven, the
    unit's failure code is this answer's ``failure_code`` (default
    ``proof_missing``).

    Args:
        request: The `mesh.ApplyRequest` answered.
        reason: Why (not blank): written as ``notes`` and as the evidence's key line.
        command: The command that failed.
        exit_code: Its exit code.
        failure_code: A `mesh.FailureCode` for the unit, such as
            ``FailureCode.SCOPE_VIOLATION`` for a patch writing outside its scope.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def applier(request: mesh.ApplyRequest) -> mesh.WorkerResult:
    ...     return mesh.answers.apply_failed(
    ...         request,
    ...         reason="writes outside src/",
    ...         failure_code=mesh.FailureCode.SCOPE_VIOLATION,
    ...     )
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> mesh.run(plan, roles=fake_roles(applier=applier), max_attempts=1).outcomes[0].failure_code
    <FailureCode.SCOPE_VIOLATION: 'scope_violation'>

    .. versionadded:: 0.1.0
    """
    text = _text("notes", reason, required=True)
    evidence = ProofEvidence(
        command=_text("apply_evidence.command", command),
        key_line=text,
        exit_code=_integer("apply_evidence.exit_code", exit_code),
    )
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.APPLIER,
        decision=Decision.APPLY_FAILED,
        triplet_index=request.candidate.triplet_index,
        base_sha=request.candidate.base_sha,
        proof_evidence=evidence,
        apply_evidence=evidence,
        notes=text,
        failure_code=_failure_code(failure_code),
    )


def proof(
    request: ProofRequest,
    *,
    passed: bool,
    evidence: str = "",
    command: str | None = None,
    exit_code: int | None = None,
) -> WorkerResult:
    r"""
    A prover's answer (decision and proof status ``pass`` or ``fail``).

    The proof attempt (1, or 2 for the one retry after a failure), triplet
    index and base commit come from the request.

    Args:
        request: The `mesh.ProofRequest` answered.
        passed: Whether the proof passed.
        evidence: The one output line that shows the outcome (``"12 passed"``).
        command: The command that ran; default the unit's ``proof_command``.
        exit_code: Its exit code; default 0 when passed, else 1.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value (``passed`` must be a
            bool), or a proof attempt other than 1 or 2.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def prover(request: mesh.ProofRequest) -> mesh.WorkerResult:
    ...     added = (request.candidate.patch or "").count("\n+")
    ...     return mesh.answers.proof(request, passed=added <= 50, evidence=f"{added} lines added")
    >>> plan = [mesh.Unit(id="a", objective="write a", proof_command="count lines")]
    >>> print(mesh.run(plan, roles=fake_roles(prover=prover)).outcomes[0].state)
    completed

    .. versionadded:: 0.1.0
    """
    _flag("passed", passed)
    code = _integer("proof_evidence.exit_code", int(not passed) if exit_code is None else exit_code)
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
        base_sha=request.candidate.base_sha,
        proof_status=status,
        proof_attempts=request.proof_attempt,
        proof_evidence=ProofEvidence(
            command=_text(
                "proof_evidence.command", request.unit.proof_command if command is None else command
            ),
            key_line=_text("proof_evidence.key_line", evidence),
            exit_code=code,
        ),
    )


# -- fixer ---------------------------------------------------------------------------


def verdict(request: AdjudicationRequest, *, select: str, notes: str | None = None) -> WorkerResult:
    """
    A fixer's approval of one proven candidate (decision ``accepted``).

    The quorum target comes from the request (it must be the one the unit's
    risk tier needs) and is written as observed too: each fixer approves once,
    and the engine counts the approvals of each candidate.

    Args:
        request: The `mesh.AdjudicationRequest` answered.
        select: The candidate id approved: one of ``request.proven``.
        notes: Why this one.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: ``select`` is not a proven candidate's id, or
            a wrong type or value.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
    ...     smallest = min(request.proven, key=lambda pair: len(pair[0].patch or ""))
    ...     return mesh.answers.verdict(request, select=smallest[0].candidate_id)
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> print(mesh.run(plan, roles=fake_roles(fixer=fixer)).outcomes[0].state)
    completed

    .. versionadded:: 0.1.0
    """
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


def _objection(
    request: AdjudicationRequest, decision: Decision, reason: str, code: FailureCode | None
) -> WorkerResult:
    """A fixer's answer that accepts nothing."""
    notes, evidence = _reason(reason)
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.FIXER,
        decision=decision,
        triplet_index=request.fixer_index,
        proof_evidence=evidence,
        quorum_target=request.quorum_target,
        failure_code=code,
        notes=notes,
    )


def rework(
    request: AdjudicationRequest, *, reason: str, failure_code: FailureCode | None = None
) -> WorkerResult:
    """
    A fixer's ``rework_required``: no candidate is good enough; plan the unit again.

    The unit starts its next attempt, if it has one left; otherwise it fails
    with ``failure_code`` (default ``requires_clarification``).

    Args:
        request: The `mesh.AdjudicationRequest` answered.
        reason: Why (not blank): written as ``notes`` and as the evidence's key line.
        failure_code: The `mesh.FailureCode` the unit fails with if no attempt is left.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
    ...     return mesh.answers.rework(request, reason="every candidate drops the cache")
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> outcome = mesh.run(plan, roles=fake_roles(fixer=fixer), max_attempts=2).outcomes[0]
    >>> outcome.attempts, outcome.evidence
    (2, 'every candidate drops the cache')

    .. versionadded:: 0.1.0
    """
    code = _failure_code(failure_code)
    return _objection(request, Decision.REWORK_REQUIRED, reason, code)


def blocked_safety(request: AdjudicationRequest, *, reason: str) -> WorkerResult:
    """
    A fixer's ``blocked_safety``: accepting would risk a safety regression.

    The unit fails at once with ``safety_regression_risk`` (no rework),
    which the answer carries as its ``failure_code``.

    Args:
        request: The `mesh.AdjudicationRequest` answered.
        reason: The risk (not blank): written as ``notes`` and as the evidence's key line.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
    ...     return mesh.answers.blocked_safety(request, reason="disables TLS verification")
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> mesh.run(plan, roles=fake_roles(fixer=fixer)).outcomes[0].failure_code
    <FailureCode.SAFETY_REGRESSION_RISK: 'safety_regression_risk'>

    .. versionadded:: 0.1.0
    """
    return _objection(request, Decision.BLOCKED_SAFETY, reason, FailureCode.SAFETY_REGRESSION_RISK)


# -- integrator ----------------------------------------------------------------------


def delivered(
    request: DeliveryRequest,
    *,
    artifact_ref: str,
    commit: bool | None = None,
    scope_assertion: str | None = None,
) -> WorkerResult:
    """
    An integrator's delivery: ``integrated_patch``, or ``integrated_commit``.

    The integrator is the only writer of plan state (``request.plan_state``).

    Args:
        request: The `mesh.DeliveryRequest` answered.
        artifact_ref: Where the delivery is (not blank): the patch file, or the commit.
        commit: Whether it was committed (``integrated_commit``); default as
            the unit's ``delivery_mode`` says.
        scope_assertion: What the integrator checked about the write scope.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def integrator(request: mesh.DeliveryRequest) -> mesh.WorkerResult:
    ...     return mesh.answers.delivered(request, artifact_ref=f"out/{request.unit.id}.patch")
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> mesh.run(plan, roles=fake_roles(integrator=integrator)).outcomes[0].artifact_ref
    'out/a.patch'

    .. versionadded:: 0.1.0
    """
    if commit is None:
        commit = request.unit.delivery_mode is DeliveryMode.COMMIT_FIRST
    else:
        _flag("commit", commit)
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.INTEGRATOR,
        decision=Decision.INTEGRATED_COMMIT if commit else Decision.INTEGRATED_PATCH,
        triplet_index=request.candidate.triplet_index,
        base_sha=request.candidate.base_sha,
        proof_status=ProofStatus.PASS,
        artifact_ref=_text("artifact_ref", artifact_ref, required=True),
        scope_assertion=_optional_text("scope_assertion", scope_assertion),
    )


def blocked_delivery(
    request: DeliveryRequest, *, reason: str, failure_code: FailureCode | None = None
) -> WorkerResult:
    """
    An integrator's ``blocked_delivery``: the accepted candidate could not be delivered.

    The unit fails (no rework) with ``failure_code`` (default ``delivery_blocked``).

    Args:
        request: The `mesh.DeliveryRequest` answered.
        reason: Why (not blank): written as ``notes`` and as the evidence's key line.
        failure_code: The `mesh.FailureCode` the unit fails with.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value.

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def integrator(request: mesh.DeliveryRequest) -> mesh.WorkerResult:
    ...     return mesh.answers.blocked_delivery(request, reason="the branch moved")
    >>> plan = [mesh.Unit(id="a", objective="write a")]
    >>> mesh.run(plan, roles=fake_roles(integrator=integrator)).outcomes[0].failure_code
    <FailureCode.DELIVERY_BLOCKED: 'delivery_blocked'>

    .. versionadded:: 0.1.0
    """
    code = _failure_code(failure_code)
    notes, evidence = _reason(reason)
    return _result(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.INTEGRATOR,
        decision=Decision.BLOCKED_DELIVERY,
        triplet_index=request.candidate.triplet_index,
        base_sha=request.candidate.base_sha,
        proof_status=ProofStatus.PASS,
        proof_evidence=evidence,
        failure_code=code,
        notes=notes,
    )
