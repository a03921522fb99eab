"""Closed vocabularies of the mesh contracts. Each member's value is its wire form."""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Final

__all__ = [
    "LANE_DECISIONS",
    "QUORUM_BY_RISK",
    "BudgetMode",
    "Decision",
    "DeliveryMode",
    "FailureCode",
    "FloorResult",
    "Lane",
    "ProofStatus",
    "RiskTier",
    "SpecialPath",
    "StepStatus",
]


class RiskTier(enum.StrEnum):
    """How much damage a wrong change to a unit could do; sets the fixer quorum."""

    LOW = "low"
    """One fixer approval is enough."""
    MED = "med"
    """Two independent fixer approvals of the same candidate."""
    HIGH = "high"
    """Three independent fixer approvals of the same candidate."""


QUORUM_BY_RISK: Final = MappingProxyType({RiskTier.LOW: 1, RiskTier.MED: 2, RiskTier.HIGH: 3})
"""Fixer approvals of one proven candidate required to accept it, by risk tier."""


class Lane(enum.StrEnum):
    """The role a worker plays for a unit."""

    CODER = "coder"
    """Writes a candidate patch."""
    REDUCER = "reducer"
    """Writes a simplifying candidate patch, with a reduce record."""
    LOCKSMITH = "locksmith"
    """Grants, denies or reclaims write-scope leases."""
    APPLIER = "applier"
    """Applies one candidate in its own worktree."""
    PROVER = "prover"
    """Runs the unit's proof command where the candidate was applied."""
    FIXER = "fixer"
    """Adjudicates proven candidates."""
    INTEGRATOR = "integrator"
    """Delivers the accepted candidate; the only writer of plan state."""


class Decision(enum.StrEnum):
    """Every decision a worker may return; `LANE_DECISIONS` says which lane may return which."""

    ACCEPT = "accept"
    """coder/reducer: here is a candidate patch."""
    REJECT = "reject"
    """coder/reducer: the unit cannot be done as specified."""
    NO_DIFF = "no_diff"
    """coder/reducer: nothing needs to change (a reason goes in ``notes``)."""
    GRANT = "grant"
    """locksmith: the lease is granted."""
    DENY = "deny"
    """locksmith: the scope overlaps an active lease; the work is requeued."""
    RECLAIM = "reclaim"
    """locksmith: an expired lease was taken back."""
    APPLIED = "applied"
    """applier: the patch applied cleanly in its worktree."""
    APPLY_FAILED = "apply_failed"
    """applier: the patch did not apply or left the write scope."""
    PASS = "pass"  # noqa: S105 - a decision word, not a password
    """prover: the proof command succeeded."""
    FAIL = "fail"
    """prover: the proof command failed on every attempt."""
    ACCEPTED = "accepted"
    """fixer: quorum reached on ``selected_candidate``."""
    REWORK_REQUIRED = "rework_required"
    """fixer: no candidate is good enough; plan the unit again."""
    BLOCKED_SAFETY = "blocked_safety"
    """fixer: accepting would risk a safety regression."""
    INTEGRATED_PATCH = "integrated_patch"
    """integrator: the patch was written as an artifact (patch_first)."""
    INTEGRATED_COMMIT = "integrated_commit"
    """integrator: the patch was committed with ``git am`` (commit_first)."""
    BLOCKED_DELIVERY = "blocked_delivery"
    """integrator: delivery was not possible."""


LANE_DECISIONS: Final = MappingProxyType(
    {
        Lane.CODER: frozenset({Decision.ACCEPT, Decision.REJECT, Decision.NO_DIFF}),
        Lane.REDUCER: frozenset({Decision.ACCEPT, Decision.REJECT, Decision.NO_DIFF}),
        Lane.LOCKSMITH: frozenset({Decision.GRANT, Decision.DENY, Decision.RECLAIM}),
        Lane.APPLIER: frozenset({Decision.APPLIED, Decision.APPLY_FAILED}),
        Lane.PROVER: frozenset({Decision.PASS, Decision.FAIL}),
        Lane.FIXER: frozenset(
            {Decision.ACCEPTED, Decision.REWORK_REQUIRED, Decision.BLOCKED_SAFETY}
        ),
        Lane.INTEGRATOR: frozenset(
            {Decision.INTEGRATED_PATCH, Decision.INTEGRATED_COMMIT, Decision.BLOCKED_DELIVERY}
        ),
    }
)
"""The decisions each lane may return under output contract v2."""


class ProofStatus(enum.StrEnum):
    """Outcome of a candidate's proof."""

    PASS = "pass"  # noqa: S105 - a proof status, not a password
    """The proof command exited 0."""
    FAIL = "fail"
    """The proof command failed on every attempt."""
    SKIPPED = "skipped"
    """No proof ran (for example, the patch did not apply)."""
    NOT_APPLICABLE = "not_applicable"
    """The lane does not prove anything."""


class DeliveryMode(enum.StrEnum):
    """How the integrator delivers an accepted candidate."""

    PATCH_FIRST = "patch_first"
    """Write the patch as an artifact; the host applies it."""
    COMMIT_FIRST = "commit_first"
    """Commit the patch on the target branch with ``git am``."""


class FailureCode(enum.StrEnum):
    """The one primary reason a unit was not accepted (the failure taxonomy)."""

    SAFETY_REGRESSION_RISK = "safety_regression_risk"
    """Accepting the change could regress safety."""
    PROOF_MISSING = "proof_missing"
    """No candidate has a passing proof."""
    INVALID_OUTPUT_SCHEMA = "invalid_output_schema"
    """A worker result broke output contract v2."""
    SCOPE_OVERLAP_CONFLICT = "scope_overlap_conflict"
    """The unit's write scope could not be leased."""
    SCOPE_VIOLATION = "scope_violation"
    """A candidate would write outside the unit's write scope, or a kind of path
    (symlink, gitlink, ``.gitattributes``, ``.gitmodules``) its scope does not allow."""
    TIMEOUT_RETRY_EXHAUSTED = "timeout_retry_exhausted"
    """A call timed out after one retry and one replacement."""
    DELIVERY_BLOCKED = "delivery_blocked"
    """The integrator could not deliver the accepted candidate."""
    REQUIRES_CLARIFICATION = "requires_clarification"
    """The input is ambiguous or invalid; a person has to decide."""
    TOOLING_UNAVAILABLE = "tooling_unavailable"
    """A tool, file or adapter needed for the work is not available."""


class SpecialPath(enum.StrEnum):
    """Kinds of path a candidate may write only when its unit's ``allow_special`` lists them."""

    SYMLINK = "symlink"
    """A symbolic link (git mode 120000); it must still resolve inside the worktree."""
    GITLINK = "gitlink"
    """A submodule entry (git mode 160000)."""
    GITATTRIBUTES = "gitattributes"
    """A ``.gitattributes`` file: it changes how git filters and compares files."""
    GITMODULES = "gitmodules"
    """A ``.gitmodules`` file: it says where submodules come from."""

    @property
    def article(self) -> str:
        """The kind with its article, as messages say it."""
        return {
            SpecialPath.SYMLINK: "a symlink",
            SpecialPath.GITLINK: "a gitlink (submodule)",
            SpecialPath.GITATTRIBUTES: "a .gitattributes file",
            SpecialPath.GITMODULES: "a .gitmodules file",
        }[self]


class StepStatus(enum.StrEnum):
    """Status of an ``update_plan`` step, as counted by ``plan_sync``."""

    PENDING = "pending"
    """Not started; sliced into a unit."""
    IN_PROGRESS = "in_progress"
    """Started; sliced into a unit."""
    COMPLETED = "completed"
    """Done; satisfies the dependencies of other steps."""
    OTHER = "other"
    """Any other status text (kept verbatim on the step, never sliced)."""


class BudgetMode(enum.StrEnum):
    """How the budget policy clamps concurrency."""

    FULL_FANOUT = "full_fanout"
    """Remaining budget is above the linear-start threshold: no clamp."""
    LINEAR_CLAMP = "linear_clamp"
    """Concurrency scales linearly between the two thresholds."""
    SINGLE_AGENT = "single_agent"
    """One active unit at a time."""


class FloorResult(enum.StrEnum):
    """Outcome of the run_csv concurrency floor gate."""

    PASS = "pass"  # noqa: S105 - a gate result, not a password
    """The effective peak reaches the floor."""
    FAIL = "fail"
    """The effective peak is below the floor."""
    NOT_APPLICABLE = "not_applicable"
    """Fewer runnable units than the floor: the gate does not apply."""
