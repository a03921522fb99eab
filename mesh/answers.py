r"""
Answer builders for role adapters: one per decision a lane may make.

A role adapter answers its request with a `mesh.WorkerResult` under output
contract v2 (eleven required fields, more per lane). The builders here take
the request and only what the adapter decides; every field the request
already knows (unit id, candidate id, lane, triplet index, write scope, risk
tier, base commit, quorum target, proof attempt) is filled from it. Every
argument is keyword-only and typed, so a misspelt keyword is a type error, and
checked at run time: a wrong type or value raises `mesh.InvalidOutputSchema`
naming the answer's field by its JSON path (``$.patch: must not be blank``).
What they build passes the full contract check, and the engine takes it
without checking it again.

- coder: `candidate`, `reject`, `no_diff`
- reducer: `reduction`, `reject`, `no_diff`
- locksmith: `lease` (``grant``, ``deny`` or ``reclaim``)
- applier: `applied`, `apply_failed`
- prover: `proof` (``pass`` or ``fail``)
- fixer: `verdict` (``accepted``), `rework`, `blocked_safety`
- integrator: `delivered` (a patch or a commit), `blocked_delivery`

    >>> import mesh, mesh.answers
    >>> from mesh.testing import fake_roles
    >>> def coder(request: mesh.AuthorRequest) -> mesh.WorkerResult:
    ...     diff = "--- a/src/a.py\n+++ b/src/a.py\n@@ -0,0 +1 @@\n+A = 1\n"
    ...     return mesh.answers.candidate(request, patch=diff, notes="one constant")
    >>> plan = [mesh.Unit(id="a", objective="define A", write_scope=("src/a.py",))]
    >>> print(mesh.run(plan, roles=fake_roles(coder=coder)).outcomes[0].state)
    completed

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

from . import _rehome
from .contracts._enums import Decision
from .engine import _answers

# One implementation each: these builders are the engine's own, which carry the public
# docstrings; `candidate` and `lease` below take other parameters than the engine's.
from .engine._answers import (
    applied,
    apply_failed,
    blocked_delivery,
    blocked_safety,
    delivered,
    no_diff,
    proof,
    reduction,
    reject,
    rework,
    verdict,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .contracts._records import WorkerResult
    from .engine._roles import AuthorRequest, LeaseRequest

__all__ = [
    "LeaseDecision",
    "applied",
    "apply_failed",
    "blocked_delivery",
    "blocked_safety",
    "candidate",
    "delivered",
    "lease",
    "no_diff",
    "proof",
    "reduction",
    "reject",
    "rework",
    "verdict",
]

LeaseDecision: TypeAlias = Literal[Decision.GRANT, Decision.DENY, Decision.RECLAIM]
"""The decisions a locksmith may make: `Decision.GRANT`, `Decision.DENY`, `Decision.RECLAIM`."""


def candidate(
    request: AuthorRequest,
    *,
    patch: str,
    notes: str | None = None,
    challenge_findings: Sequence[str] | None = None,
    base_sha: str | None = None,
) -> WorkerResult:
    r"""
    A coder's candidate patch (decision ``accept``).

    A reducer's candidate also needs its reduce record: build it with `reduction`.

    Args:
        request: The `mesh.AuthorRequest` answered.
        patch: The unified diff (not blank), relative to the repository root.
        notes: Anything the fixers should know about the candidate.
        challenge_findings: Problems found in the unit itself (one per item).
        base_sha: The commit the patch was written against; default the
            request's ``unit.base_sha``.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value, a reducer's request,
            or a request for another lane.

    >>> import mesh, mesh.answers
    >>> unit = mesh.Unit(id="u1", objective="add a flag", write_scope=("src/flags.py",))
    >>> request = mesh.AuthorRequest(
    ...     unit=unit, lane=mesh.Lane.CODER, candidate_id="u1-coder-1", triplet_index=1, attempt=1
    ... )
    >>> answer = mesh.answers.candidate(request, patch="--- a/src/flags.py\n+++ b/src/flags.py\n")
    >>> answer.decision, answer.candidate_id, answer.write_scope, answer.base_sha
    (<Decision.ACCEPT: 'accept'>, 'u1-coder-1', ('src/flags.py',), 'HEAD')

    .. versionadded:: 0.1.0
    """
    return _answers.candidate(
        request,
        patch=patch,
        notes=notes,
        challenge_findings=challenge_findings,
        base_sha=base_sha,
    )


def lease(
    request: LeaseRequest, *, decision: LeaseDecision, lease_id: str, reason: str
) -> WorkerResult:
    """
    A locksmith's answer: ``grant``, ``deny`` or ``reclaim`` a write-scope lease.

    The write scope and ``ttl_ms`` come from the request. A denied unit waits
    for a release (or the lease's time to live) and asks again; it never fails
    for it.

    Args:
        request: The `mesh.LeaseRequest` answered (``action`` is ``acquire``
            or ``release``).
        decision: `Decision.GRANT`, `Decision.DENY` or `Decision.RECLAIM`
            (a released or expired lease taken back).
        lease_id: The lease granted (not blank), the one in the way of a
            denial, or the one reclaimed.
        reason: Why: written as ``notes`` and as the evidence's key line.

    Returns:
        The checked answer.

    Raises:
        mesh.InvalidOutputSchema: A wrong type or value, another decision, or
            a grant for a request whose ``ttl_ms`` is not positive.

    >>> import mesh, mesh.answers
    >>> request = mesh.LeaseRequest(
    ...     unit=mesh.Unit(id="u1", objective="add a flag", write_scope=("src/",)),
    ...     candidate_id="u1-lease",
    ...     action="acquire",
    ...     holder="u1",
    ...     write_scope=("src/",),
    ...     ttl_ms=60_000,
    ... )
    >>> answer = mesh.answers.lease(
    ...     request, decision=mesh.Decision.GRANT, lease_id="lease-7", reason="granted"
    ... )
    >>> answer.lease_id, answer.ttl_ms
    ('lease-7', 60000)

    .. versionadded:: 0.1.0
    """
    return _answers.lease(request, decision=decision, lease_id=lease_id, reason=reason)


# Docs, reprs and `help()` name every builder `mesh.answers.X`, the engine's too.
for _name in __all__:
    _rehome(globals()[_name], __name__)
del _name
