"""mesh.answers: one typed, checked builder per decision, held to the contract and run."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

import mesh
from mesh import answers
from mesh.contracts._contract import is_checked
from mesh.testing import FakeAdapter, answer, fake_roles
from mesh.testing._fakes import _patch_for

ROOT = Path(__file__).resolve().parent.parent
PATCH = "--- a/src/flags.py\n+++ b/src/flags.py\n@@ -0,0 +1 @@\n+FLAG = True\n"
UNIT = mesh.Unit(
    id="u1",
    objective="add a flag",
    write_scope=("src/flags.py",),
    risk_tier=mesh.RiskTier.HIGH,
    base_sha="abc123",
    proof_command="pytest -q",
)
COMMIT_UNIT = attrs.evolve(UNIT, delivery_mode=mesh.DeliveryMode.COMMIT_FIRST)


def author(lane: mesh.Lane = mesh.Lane.CODER, index: int = 1) -> mesh.AuthorRequest:
    return mesh.AuthorRequest(
        unit=UNIT,
        lane=lane,
        candidate_id=f"u1-{lane.value}-{index}",
        triplet_index=index,
        attempt=1,
    )


# The coder worked at a known commit: the later lanes answer at the candidate's commit.
CANDIDATE = answers.candidate(author(index=2), patch=PATCH, base_sha="def456")
LEASE = mesh.LeaseRequest(
    unit=UNIT,
    candidate_id="u1-lease",
    action="acquire",
    holder="u1",
    write_scope=("src/",),
    ttl_ms=60_000,
)
APPLY = mesh.ApplyRequest(
    unit=UNIT, candidate_id="u1-coder-2", candidate=CANDIDATE, lease_id="lease-1", attempt=1
)
APPLIED = answers.applied(APPLY, worktree_path="/w/u1-coder-2")
PROVE = mesh.ProofRequest(
    unit=UNIT,
    candidate_id="u1-coder-2",
    candidate=CANDIDATE,
    applied=APPLIED,
    proof_attempt=2,
    attempt=1,
)
PASSED = answers.proof(PROVE, passed=True, evidence="3 passed")
ADJUDICATE = mesh.AdjudicationRequest(
    unit=UNIT,
    candidate_id="u1-fixer-2",
    proven=((CANDIDATE, PASSED),),
    rejected=(),
    fixer_index=2,
    quorum_target=3,
    attempt=1,
)
DELIVER = mesh.DeliveryRequest(
    unit=UNIT,
    candidate_id="u1-coder-2",
    candidate=CANDIDATE,
    proof=PASSED,
    approvals=3,
    plan_state={},
    attempt=1,
)
REDUCE = mesh.ReduceRecord(
    target_abstraction="two flag parsers",
    replacement_primitive="one table",
    complexity_delta="-12 lines",
    invariants_preserved=("same defaults", "same errors"),
    rollback_plan="revert the patch",
)


def expected(
    lane: mesh.Lane,
    decision: mesh.Decision,
    candidate_id: str,
    *,
    triplet_index: int = 1,
    base_sha: str = "abc123",
    write_scope: tuple[str, ...] = ("src/flags.py",),
    proof_status: mesh.ProofStatus = mesh.ProofStatus.NOT_APPLICABLE,
    proof_attempts: int = 0,
    evidence: tuple[str, str, int] = ("", "", 0),
    **fields: Any,
) -> mesh.WorkerResult:
    """The record a builder should make for ``UNIT``, spelt out field by field."""
    command, key_line, exit_code = evidence
    return mesh.WorkerResult(
        id="u1",
        candidate_id=candidate_id,
        triplet_index=triplet_index,
        lane=lane,
        decision=decision,
        proof_status=proof_status,
        write_scope=write_scope,
        risk_tier=mesh.RiskTier.HIGH,
        base_sha=base_sha,
        proof_attempts=proof_attempts,
        proof_evidence=mesh.ProofEvidence(command=command, key_line=key_line, exit_code=exit_code),
        **fields,
    )


CODER, REDUCER = mesh.Lane.CODER, mesh.Lane.REDUCER
D = mesh.Decision
REASON = "the objective contradicts an invariant"

# (id, build, expected): every decision of every lane, and each default the request fills.
BUILT: list[tuple[str, Callable[[], mesh.WorkerResult], mesh.WorkerResult]] = [
    (
        "candidate",
        lambda: answers.candidate(author(), patch=PATCH, notes="n", challenge_findings=["wide"]),
        expected(
            CODER, D.ACCEPT, "u1-coder-1", patch=PATCH, notes="n", challenge_findings=("wide",)
        ),
    ),
    (
        "candidate-at-a-commit",
        lambda: answers.candidate(author(index=2), patch=PATCH, base_sha="def456"),
        expected(CODER, D.ACCEPT, "u1-coder-2", triplet_index=2, base_sha="def456", patch=PATCH),
    ),
    (
        "reduction",
        lambda: answers.reduction(
            author(REDUCER, 3),
            patch=PATCH,
            target_abstraction="two flag parsers",
            replacement_primitive="one table",
            complexity_delta="-12 lines",
            invariants_preserved=["same defaults", "same errors"],
            rollback_plan="revert the patch",
            challenge_findings=("scope too wide",),
        ),
        expected(
            REDUCER,
            D.ACCEPT,
            "u1-reducer-3",
            triplet_index=3,
            patch=PATCH,
            reduce_record=REDUCE,
            challenge_findings=("scope too wide",),
        ),
    ),
    (
        "reject",
        lambda: answers.reject(author(), reason=REASON, challenge_findings=["x"]),
        expected(
            CODER,
            D.REJECT,
            "u1-coder-1",
            evidence=("", REASON, 0),
            notes=REASON,
            challenge_findings=("x",),
        ),
    ),
    (
        "reject-by-the-reducer",
        lambda: answers.reject(author(REDUCER, 3), reason=REASON, base_sha="def456"),
        expected(
            REDUCER,
            D.REJECT,
            "u1-reducer-3",
            triplet_index=3,
            base_sha="def456",
            evidence=("", REASON, 0),
            notes=REASON,
        ),
    ),
    (
        "no_diff",
        lambda: answers.no_diff(author(), reason="done already"),
        expected(
            CODER, D.NO_DIFF, "u1-coder-1", evidence=("", "done already", 0), notes="done already"
        ),
    ),
    (
        "no_diff-by-the-reducer",
        lambda: answers.no_diff(author(REDUCER, 3), reason="simple enough"),
        expected(
            REDUCER,
            D.NO_DIFF,
            "u1-reducer-3",
            triplet_index=3,
            evidence=("", "simple enough", 0),
            notes="simple enough",
        ),
    ),
    (
        "lease-grant",
        lambda: answers.lease(LEASE, decision=D.GRANT, lease_id="lease-7", reason="granted"),
        expected(
            mesh.Lane.LOCKSMITH,
            D.GRANT,
            "u1-lease",
            write_scope=("src/",),
            evidence=("", "granted", 0),
            lease_id="lease-7",
            ttl_ms=60_000,
            notes="granted",
        ),
    ),
    (
        "lease-deny",
        lambda: answers.lease(LEASE, decision=D.DENY, lease_id="lease-3", reason="overlaps"),
        expected(
            mesh.Lane.LOCKSMITH,
            D.DENY,
            "u1-lease",
            write_scope=("src/",),
            evidence=("", "overlaps", 0),
            lease_id="lease-3",
            ttl_ms=60_000,
            notes="overlaps",
        ),
    ),
    (
        "lease-reclaim",
        lambda: answers.lease(
            attrs.evolve(LEASE, action="release", lease_id="lease-7"),
            decision=D.RECLAIM,
            lease_id="lease-7",
            reason="released",
        ),
        expected(
            mesh.Lane.LOCKSMITH,
            D.RECLAIM,
            "u1-lease",
            write_scope=("src/",),
            evidence=("", "released", 0),
            lease_id="lease-7",
            ttl_ms=60_000,
            notes="released",
        ),
    ),
    (
        "applied",
        lambda: answers.applied(APPLY, worktree_path="/w/1"),
        expected(
            mesh.Lane.APPLIER,
            D.APPLIED,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            worktree_path="/w/1",
        ),
    ),
    (
        "applied-with-evidence",
        lambda: answers.applied(APPLY, command="git apply", evidence="applied at def456"),
        expected(
            mesh.Lane.APPLIER,
            D.APPLIED,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            evidence=("git apply", "applied at def456", 0),
            apply_evidence=mesh.ProofEvidence(
                command="git apply", key_line="applied at def456", exit_code=0
            ),
        ),
    ),
    (
        "apply_failed",
        lambda: answers.apply_failed(
            APPLY,
            reason="writes outside src/",
            command="scope check",
            exit_code=2,
            failure_code=mesh.FailureCode.SCOPE_VIOLATION,
        ),
        expected(
            mesh.Lane.APPLIER,
            D.APPLY_FAILED,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            evidence=("scope check", "writes outside src/", 2),
            apply_evidence=mesh.ProofEvidence(
                command="scope check", key_line="writes outside src/", exit_code=2
            ),
            notes="writes outside src/",
            failure_code=mesh.FailureCode.SCOPE_VIOLATION,
        ),
    ),
    (
        "proof-passed",
        lambda: answers.proof(PROVE, passed=True, evidence="3 passed"),
        expected(
            mesh.Lane.PROVER,
            D.PASS,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.PASS,
            proof_attempts=2,
            evidence=("pytest -q", "3 passed", 0),
        ),
    ),
    (
        "proof-failed",
        lambda: answers.proof(
            attrs.evolve(PROVE, proof_attempt=1), passed=False, evidence="1 failed"
        ),
        expected(
            mesh.Lane.PROVER,
            D.FAIL,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.FAIL,
            proof_attempts=1,
            evidence=("pytest -q", "1 failed", 1),
        ),
    ),
    (
        "proof-failed-with-its-command",
        lambda: answers.proof(PROVE, passed=False, command="make check", exit_code=2),
        expected(
            mesh.Lane.PROVER,
            D.FAIL,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.FAIL,
            proof_attempts=2,
            evidence=("make check", "", 2),
        ),
    ),
    (
        "verdict",
        lambda: answers.verdict(ADJUDICATE, select="u1-coder-2", notes="smallest"),
        expected(
            mesh.Lane.FIXER,
            D.ACCEPTED,
            "u1-fixer-2",
            triplet_index=2,
            proof_status=mesh.ProofStatus.PASS,
            selected_candidate="u1-coder-2",
            quorum_target=3,
            quorum_observed=3,
            notes="smallest",
        ),
    ),
    (
        "rework",
        lambda: answers.rework(
            ADJUDICATE, reason="drops the cache", failure_code=mesh.FailureCode.PROOF_MISSING
        ),
        expected(
            mesh.Lane.FIXER,
            D.REWORK_REQUIRED,
            "u1-fixer-2",
            triplet_index=2,
            evidence=("", "drops the cache", 0),
            notes="drops the cache",
            quorum_target=3,
            failure_code=mesh.FailureCode.PROOF_MISSING,
        ),
    ),
    (
        "rework-without-a-code",
        lambda: answers.rework(ADJUDICATE, reason="unclear"),
        expected(
            mesh.Lane.FIXER,
            D.REWORK_REQUIRED,
            "u1-fixer-2",
            triplet_index=2,
            evidence=("", "unclear", 0),
            notes="unclear",
            quorum_target=3,
        ),
    ),
    (
        "blocked_safety",
        lambda: answers.blocked_safety(ADJUDICATE, reason="disables TLS checks"),
        expected(
            mesh.Lane.FIXER,
            D.BLOCKED_SAFETY,
            "u1-fixer-2",
            triplet_index=2,
            evidence=("", "disables TLS checks", 0),
            notes="disables TLS checks",
            quorum_target=3,
            failure_code=mesh.FailureCode.SAFETY_REGRESSION_RISK,
        ),
    ),
    (
        "delivered-as-the-unit-says",
        lambda: answers.delivered(DELIVER, artifact_ref="out/u1.patch"),
        expected(
            mesh.Lane.INTEGRATOR,
            D.INTEGRATED_PATCH,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.PASS,
            artifact_ref="out/u1.patch",
        ),
    ),
    (
        "delivered-commit-first",
        lambda: answers.delivered(
            attrs.evolve(DELIVER, unit=COMMIT_UNIT), artifact_ref="0123abcd", scope_assertion="ok"
        ),
        expected(
            mesh.Lane.INTEGRATOR,
            D.INTEGRATED_COMMIT,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.PASS,
            artifact_ref="0123abcd",
            scope_assertion="ok",
        ),
    ),
    (
        "delivered-commit-given",
        lambda: answers.delivered(DELIVER, artifact_ref="0123abcd", commit=True),
        expected(
            mesh.Lane.INTEGRATOR,
            D.INTEGRATED_COMMIT,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.PASS,
            artifact_ref="0123abcd",
        ),
    ),
    (
        "delivered-patch-given",
        lambda: answers.delivered(
            attrs.evolve(DELIVER, unit=COMMIT_UNIT), artifact_ref="out/u1.patch", commit=False
        ),
        expected(
            mesh.Lane.INTEGRATOR,
            D.INTEGRATED_PATCH,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.PASS,
            artifact_ref="out/u1.patch",
        ),
    ),
    (
        "blocked_delivery",
        lambda: answers.blocked_delivery(
            DELIVER, reason="the branch moved", failure_code=mesh.FailureCode.TOOLING_UNAVAILABLE
        ),
        expected(
            mesh.Lane.INTEGRATOR,
            D.BLOCKED_DELIVERY,
            "u1-coder-2",
            triplet_index=2,
            base_sha="def456",
            proof_status=mesh.ProofStatus.PASS,
            evidence=("", "the branch moved", 0),
            notes="the branch moved",
            failure_code=mesh.FailureCode.TOOLING_UNAVAILABLE,
        ),
    ),
]


class TestBuilt:
    @pytest.mark.parametrize(
        ("build", "want"), [(b, w) for _, b, w in BUILT], ids=[i for i, _, _ in BUILT]
    )
    def test_each_builder_makes_what_it_should(
        self, build: Callable[[], mesh.WorkerResult], want: mesh.WorkerResult
    ) -> None:
        """Each answer is the expected record, registered as checked, and passes the full check."""
        built = build()
        assert want == built
        assert is_checked(built)
        assert built == mesh.parse_worker_result(mesh.worker_result_document(built))
        assert built.decision in mesh.LANE_DECISIONS[built.lane]

    def test_every_decision_of_every_lane_has_a_builder(self) -> None:
        """The builders cover `mesh.LANE_DECISIONS` whole."""
        covered = {(want.lane, want.decision) for _, _, want in BUILT}
        every = {
            (lane, decision)
            for lane, allowed in mesh.LANE_DECISIONS.items()
            for decision in allowed
        }
        assert every == covered

    def test_a_reducer_record_may_also_come_whole(self) -> None:
        """The engine's own candidate builder takes a ready `ReduceRecord`; the same record."""
        from mesh.engine import _answers  # noqa: PLC0415 - the private twin, compared once

        whole = _answers.candidate(author(REDUCER, 3), patch=PATCH, reduce_record=REDUCE)
        record = {
            field.name: getattr(REDUCE, field.name) for field in attrs.fields(mesh.ReduceRecord)
        }
        fields = answers.reduction(author(REDUCER, 3), patch=PATCH, **record)
        assert whole == fields


def _refusals() -> list[tuple[Callable[[], object], str]]:
    """Each wrong argument, and the one problem (with the answer's JSON path) it gives."""
    fixer = mesh.AuthorRequest(
        unit=UNIT, lane=mesh.Lane.FIXER, candidate_id="u1-fixer-1", triplet_index=1, attempt=1
    )
    record: dict[str, Any] = {
        "target_abstraction": "a",
        "replacement_primitive": "b",
        "complexity_delta": "-1",
        "invariants_preserved": ["c"],
        "rollback_plan": "d",
    }
    reducer = author(REDUCER, 3)
    return [
        (lambda: answers.candidate(author(), patch=3), "$.patch: expected string, got int"),  # type: ignore[arg-type]
        (lambda: answers.candidate(author(), patch=" \n"), "$.patch: must not be blank"),
        (
            lambda: answers.candidate(author(), patch=PATCH, notes="\ud800"),
            "$.notes: not valid Unicode (a lone surrogate)",
        ),
        (
            lambda: answers.candidate(reducer, patch=PATCH),
            (
                "$.reduce_record: a reducer's candidate needs a reduce_record"
                " (build it with mesh.answers.reduction)"
            ),
        ),
        (
            lambda: answers.candidate(fixer, patch=PATCH),
            "$.lane: a candidate comes from a coder or the reducer, not <Lane.FIXER: 'fixer'>",
        ),
        (
            lambda: answers.candidate(author(), patch=PATCH, challenge_findings="one string"),
            "$.challenge_findings: expected a list of strings, got str",
        ),
        (
            lambda: answers.candidate(author(), patch=PATCH, challenge_findings=["ok", 2]),  # type: ignore[list-item]
            "$.challenge_findings[1]: expected string, got int",
        ),
        (
            lambda: answers.candidate(author(), patch=PATCH, base_sha=" "),
            "$.base_sha: must not be blank",
        ),
        (
            lambda: answers.candidate(author(), patch=PATCH, base_sha=5),  # type: ignore[arg-type]
            "$.base_sha: expected string, got int",
        ),
        (
            lambda: answers.reduction(
                reducer, patch=PATCH, **(record | {"invariants_preserved": "x"})
            ),
            "$.reduce_record.invariants_preserved: expected a list of strings, got str",
        ),
        (
            lambda: answers.reduction(
                reducer, patch=PATCH, **(record | {"invariants_preserved": [1]})
            ),
            "$.reduce_record.invariants_preserved[0]: expected string, got int",
        ),
        (
            lambda: answers.reduction(
                reducer, patch=PATCH, **(record | {"target_abstraction": None})
            ),
            "$.reduce_record.target_abstraction: expected string, got NoneType",
        ),
        (
            lambda: answers.reduction(
                reducer, patch=PATCH, **(record | {"replacement_primitive": 1})
            ),
            "$.reduce_record.replacement_primitive: expected string, got int",
        ),
        (
            lambda: answers.reduction(reducer, patch=PATCH, **(record | {"complexity_delta": -12})),
            "$.reduce_record.complexity_delta: expected string, got int",
        ),
        (
            lambda: answers.reduction(
                reducer, patch=PATCH, **(record | {"rollback_plan": "\udc00"})
            ),
            "$.reduce_record.rollback_plan: not valid Unicode (a lone surrogate)",
        ),
        (
            lambda: answers.reduction(reducer, patch="", **record),
            "$.patch: must not be blank",
        ),
        (
            lambda: answers.reduction(fixer, patch=PATCH, **(record | {"rollback_plan": 1})),
            "$.lane: a candidate comes from a coder or the reducer, not <Lane.FIXER: 'fixer'>",
        ),
        (lambda: answers.reject(author(), reason=""), "$.notes: must not be blank"),
        (lambda: answers.reject(fixer, reason="r"), "$.lane: a candidate comes from a coder"),
        (lambda: answers.reject(author(), reason=None), "$.notes: expected string, got NoneType"),  # type: ignore[arg-type]
        (lambda: answers.no_diff(author(), reason="  "), "$.notes: must not be blank"),
        (lambda: answers.no_diff(fixer, reason="r"), "$.lane: a candidate comes from a coder"),
        (
            lambda: answers.lease(LEASE, decision=D.APPLIED, lease_id="l", reason="r"),  # type: ignore[arg-type]
            "$.decision: locksmith may not decide <Decision.APPLIED: 'applied'>",
        ),
        (
            lambda: answers.lease(LEASE, decision="grant", lease_id="l", reason="r"),  # type: ignore[arg-type]
            "$.decision: locksmith may not decide 'grant'",
        ),
        (
            lambda: answers.lease(LEASE, decision=D.GRANT, lease_id="", reason="r"),
            "$.lease_id: must not be blank",
        ),
        (
            lambda: answers.lease(
                attrs.evolve(LEASE, ttl_ms=0), decision=D.GRANT, lease_id="l", reason="r"
            ),
            "$.ttl_ms: a granted lease needs ttl_ms > 0",
        ),
        (
            lambda: answers.lease(LEASE, decision=D.DENY, lease_id="l", reason=3),  # type: ignore[arg-type]
            "$.notes: expected string, got int",
        ),
        (
            lambda: answers.applied(APPLY, worktree_path=Path("/w")),  # type: ignore[arg-type]
            "$.worktree_path: expected string, got PosixPath",
        ),
        (
            lambda: answers.applied(APPLY, command=None),  # type: ignore[arg-type]
            "$.apply_evidence.command: expected string, got NoneType",
        ),
        (
            lambda: answers.applied(APPLY, evidence=b"ok"),  # type: ignore[arg-type]
            "$.apply_evidence.key_line: expected string, got bytes",
        ),
        (lambda: answers.apply_failed(APPLY, reason=""), "$.notes: must not be blank"),
        (
            lambda: answers.apply_failed(APPLY, reason="r", exit_code="1"),  # type: ignore[arg-type]
            "$.apply_evidence.exit_code: expected integer, got '1'",
        ),
        (
            lambda: answers.apply_failed(APPLY, reason="r", command=1),  # type: ignore[arg-type]
            "$.apply_evidence.command: expected string, got int",
        ),
        (
            lambda: answers.apply_failed(APPLY, reason="r", failure_code="scope_violation"),  # type: ignore[arg-type]
            "$.failure_code: expected a mesh.FailureCode, got 'scope_violation'",
        ),
        (
            lambda: answers.proof(PROVE, passed=1),  # type: ignore[arg-type]
            "passed: expected True or False, got 1",
        ),
        (
            lambda: answers.proof(PROVE, passed=True, exit_code=1.0),  # type: ignore[arg-type]
            "$.proof_evidence.exit_code: expected integer, got 1.0",
        ),
        (
            lambda: answers.proof(PROVE, passed=False, exit_code=False),
            "$.proof_evidence.exit_code: expected integer, got False",
        ),
        (
            lambda: answers.proof(PROVE, passed=True, evidence=None),  # type: ignore[arg-type]
            "$.proof_evidence.key_line: expected string, got NoneType",
        ),
        (
            lambda: answers.proof(PROVE, passed=True, command=7),  # type: ignore[arg-type]
            "$.proof_evidence.command: expected string, got int",
        ),
        (
            lambda: answers.proof(attrs.evolve(PROVE, proof_attempt=3), passed=True),
            "$.proof_attempts: a prover result needs 1 or 2, got 3",
        ),
        (
            lambda: answers.verdict(ADJUDICATE, select="u1-coder-9"),
            "$.selected_candidate: 'u1-coder-9' is not a proven candidate",
        ),
        (
            lambda: answers.verdict(ADJUDICATE, select=""),
            "$.selected_candidate: must not be blank",
        ),
        (
            lambda: answers.verdict(ADJUDICATE, select="u1-coder-2", notes=1),  # type: ignore[arg-type]
            "$.notes: expected string, got int",
        ),
        (
            lambda: answers.verdict(attrs.evolve(ADJUDICATE, quorum_target=2), select="u1-coder-2"),
            "$.quorum_target: high risk needs 3, got 2",
        ),
        (lambda: answers.rework(ADJUDICATE, reason=""), "$.notes: must not be blank"),
        (
            lambda: answers.rework(ADJUDICATE, reason="r", failure_code="proof_missing"),  # type: ignore[arg-type]
            "$.failure_code: expected a mesh.FailureCode, got 'proof_missing'",
        ),
        (
            lambda: answers.blocked_safety(ADJUDICATE, reason=None),  # type: ignore[arg-type]
            "$.notes: expected string, got NoneType",
        ),
        (
            lambda: answers.delivered(DELIVER, artifact_ref=""),
            "$.artifact_ref: must not be blank",
        ),
        (
            lambda: answers.delivered(DELIVER, artifact_ref="a", commit="yes"),  # type: ignore[arg-type]
            "commit: expected True or False, got 'yes'",
        ),
        (
            lambda: answers.delivered(DELIVER, artifact_ref="a", scope_assertion=1),  # type: ignore[arg-type]
            "$.scope_assertion: expected string, got int",
        ),
        (lambda: answers.blocked_delivery(DELIVER, reason=" "), "$.notes: must not be blank"),
        (
            lambda: answers.blocked_delivery(DELIVER, reason="r", failure_code=1),  # type: ignore[arg-type]
            "$.failure_code: expected a mesh.FailureCode, got 1",
        ),
    ]


class TestRefused:
    @pytest.mark.parametrize(("build", "problem"), _refusals())
    def test_bad_arguments_name_their_field(
        self, build: Callable[[], object], problem: str
    ) -> None:
        """A wrong type or value is an InvalidOutputSchema naming the answer's field, alone."""
        with pytest.raises(mesh.InvalidOutputSchema) as caught:
            build()
        (found,) = caught.value.problems
        assert found.startswith(problem)

    def test_a_verdict_for_an_unknown_candidate(self) -> None:
        """A fixer may approve only a proven candidate: the builder refuses any other id."""
        rejected = attrs.evolve(ADJUDICATE, proven=(), rejected=(CANDIDATE,))
        with pytest.raises(mesh.InvalidOutputSchema, match="'u1-coder-2' is not a proven"):
            answers.verdict(rejected, select="u1-coder-2")


class TestPublicModule:
    def test_reached_after_import_mesh(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`mesh.answers` loads on first use after a plain `import mesh`."""
        monkeypatch.delattr(mesh, "answers")
        assert mesh.answers is importlib.import_module("mesh.answers")
        probe = "import mesh; print(mesh.answers.candidate.__module__)"
        shown = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
        assert shown == "mesh.answers\n"

    def test_all_is_sorted_and_every_builder_keyword_only(self) -> None:
        """Each builder takes its request, then keywords only: no **kwargs to hide a typo."""
        assert sorted(answers.__all__, key=lambda n: (n[0].islower(), n)) == answers.__all__
        builders = [getattr(answers, name) for name in answers.__all__ if name[0].islower()]
        assert len(builders) == 13
        for builder in builders:
            assert builder.__module__ == "mesh.answers"
            request, *rest = inspect.signature(builder).parameters.values()
            assert (request.name, request.kind) == ("request", request.POSITIONAL_OR_KEYWORD)
            assert {p.kind for p in rest} == {inspect.Parameter.KEYWORD_ONLY}, builder
            assert ">>> " in (builder.__doc__ or ""), builder

    def test_builders_are_the_engines_own(self) -> None:
        """One implementation: a builder whose parameters the engine shares is the engine's."""
        from mesh.engine import _answers  # noqa: PLC0415 - the private module, compared once

        twins = {"candidate", "lease"}  # the engine's take a whole reduce record, any Decision
        for name in answers.__all__:
            if name[0].islower():
                shared = getattr(_answers, name) is getattr(answers, name)
                assert (name, shared) == (name, name not in twins)

    @pytest.mark.timeout(600)  # mypy reads mesh from scratch: ~20 s alone, more when busy
    def test_misspelt_keywords_are_type_errors(self, tmp_path: Path) -> None:
        """Strict mypy accepts the builders used right and names a misspelt keyword."""
        good = tmp_path / "good.py"
        good.write_text(
            textwrap.dedent(
                """\
                import mesh

                def prover(request: mesh.ProofRequest) -> mesh.WorkerResult:
                    return mesh.answers.proof(request, passed=True, evidence="3 passed")

                def locksmith(request: mesh.LeaseRequest) -> mesh.WorkerResult:
                    decision: mesh.answers.LeaseDecision = mesh.Decision.GRANT
                    return mesh.answers.lease(
                        request, decision=decision, lease_id="l", reason="ok"
                    )
                """
            )
        )
        bad = tmp_path / "bad.py"
        bad.write_text(
            textwrap.dedent(
                """\
                import mesh

                def prover(request: mesh.ProofRequest) -> mesh.WorkerResult:
                    return mesh.answers.proof(request, passed=True, evidense="3 passed")

                def fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
                    return mesh.answers.verdict(request, selected="u1-coder-1")

                def locksmith(request: mesh.LeaseRequest) -> mesh.WorkerResult:
                    return mesh.answers.lease(
                        request, decision=mesh.Decision.APPLIED, lease_id="l", reason="r"
                    )
                """
            )
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--no-error-summary",
                "--cache-dir",
                str(tmp_path / "cache"),
                str(good),
                str(bad),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == 1, done.stderr  # mypy ran, and found the bad snippet bad
        # Only the snippets' lines: work in progress elsewhere in mesh is not this test's.
        errors = [
            line.removeprefix(str(tmp_path) + "/")
            for line in done.stdout.splitlines()
            if line.startswith(str(tmp_path)) and ": error:" in line
        ]
        assert errors == [
            (
                'bad.py:4: error: Unexpected keyword argument "evidense" for "proof"; '
                'did you mean "evidence"?  [call-arg]'
            ),
            (
                'bad.py:7: error: Unexpected keyword argument "selected" for "verdict"; '
                'did you mean "select"?  [call-arg]'
            ),
            (
                'bad.py:11: error: Argument "decision" to "lease" has incompatible type '
                '"Literal[Decision.APPLIED]"; expected '
                '"Literal[Decision.GRANT, Decision.DENY, Decision.RECLAIM]"  [arg-type]'
            ),
        ]


class TestTestingAnswer:
    def test_builds_through_the_builders(self) -> None:
        """`mesh.testing.answer` is a builder's record written out, then its overrides."""
        deliver = attrs.evolve(DELIVER, unit=COMMIT_UNIT)
        pairs: list[tuple[object, mesh.WorkerResult]] = [
            (author(), answers.candidate(author(), patch=_patch_for(UNIT, "u1-coder-1"))),
            (APPLY, answers.applied(APPLY, worktree_path="memory://u1-coder-2")),
            (PROVE, answers.proof(PROVE, passed=True, evidence="passed")),
            (ADJUDICATE, answers.verdict(ADJUDICATE, select="u1-coder-2")),
            (
                deliver,
                answers.delivered(
                    deliver,
                    artifact_ref="memory://u1/u1-coder-2.patch",
                    scope_assertion="within write_scope",
                ),
            ),
            (LEASE, answers.lease(LEASE, decision=D.GRANT, lease_id="lease-fake", reason="fake")),
        ]
        for request, record in pairs:
            assert mesh.worker_result_document(record) == answer(request)
        overridden = answer(author(), decision="reject", patch=None, notes="no")
        assert (
            overridden["decision"],
            overridden["notes"],
            "patch" in overridden,
        ) == ("reject", "no", False)


# -- the engine, on both backends, with every role written with mesh.answers ------------


def _coder(request: mesh.AuthorRequest) -> mesh.WorkerResult:
    path = request.unit.write_scope[0]
    patch = f"--- a/{path}\n+++ b/{path}\n@@ -0,0 +1 @@\n+{request.candidate_id}\n"
    return answers.candidate(request, patch=patch, notes="one line")


def _reducer(request: mesh.AuthorRequest) -> mesh.WorkerResult:
    path = request.unit.write_scope[0]
    return answers.reduction(
        request,
        patch=f"--- a/{path}\n+++ b/{path}\n@@ -0,0 +1 @@\n+r\n",
        target_abstraction="nothing",
        replacement_primitive="a shorter line",
        complexity_delta="-0",
        invariants_preserved=["behaviour"],
        rollback_plan="revert",
    )


def _locksmith(request: mesh.LeaseRequest) -> mesh.WorkerResult:
    if request.action == "release":
        return answers.lease(
            request, decision=D.RECLAIM, lease_id=request.lease_id or "", reason="released"
        )
    return answers.lease(
        request, decision=D.GRANT, lease_id=f"lease-{request.holder}", reason="granted"
    )


def _applier(request: mesh.ApplyRequest) -> mesh.WorkerResult:
    return answers.applied(request, worktree_path=f"memory://{request.candidate_id}")


def _prover(request: mesh.ProofRequest) -> mesh.WorkerResult:
    added = (request.candidate.patch or "").count("\n+") - 1
    return answers.proof(request, passed=added <= 1, evidence=f"{added} lines added")


def _fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
    smallest = min(
        request.proven, key=lambda pair: (len(pair[0].patch or ""), pair[0].candidate_id)
    )
    return answers.verdict(request, select=smallest[0].candidate_id, notes="smallest")


def _integrator(request: mesh.DeliveryRequest) -> mesh.WorkerResult:
    return answers.delivered(request, artifact_ref=f"out/{request.unit.id}.patch")


def _roles(**replaced: object) -> mesh.Roles:
    adapters: dict[str, object] = {
        "coder": _coder,
        "reducer": _reducer,
        "locksmith": _locksmith,
        "applier": _applier,
        "prover": _prover,
        "fixer": _fixer,
        "integrator": _integrator,
    }
    return mesh.Roles(**(adapters | replaced))  # type: ignore[arg-type]


async def _execute(
    roles: mesh.Roles, **options: Any
) -> tuple[mesh.RunResult, list[mesh.LedgerEvent]]:
    sink = mesh.MemorySink()
    plan = [
        mesh.Unit(id="a", objective="write a", write_scope=("src/a.py",)),
        mesh.Unit(id="b", objective="write b", write_scope=("src/b.py",), deps=("a",)),
    ]
    async with mesh.Orchestrator(roles=roles, sinks=[sink], **options) as orchestrator:
        result = await orchestrator.execute(plan)
    return result, sink.events


pytestmark = pytest.mark.anyio


class TestInARun:
    async def test_every_role_built_with_answers(self, anyio_backend: str) -> None:
        """A plan runs to the end with all seven roles answering through mesh.answers."""
        result, events = await _execute(_roles())
        assert [(o.state, o.artifact_ref) for o in result.outcomes] == [
            ("completed", "out/a.patch"),
            ("completed", "out/b.patch"),
        ]
        calls = [e for e in events if e.event == "adapter_call"]
        assert {"ok"} == {e.data["outcome"] for e in calls}
        assert set(mesh.Lane) == {e.lane for e in calls}

    async def test_with_the_fakes(self, anyio_backend: str) -> None:
        """Adapters built with mesh.answers mix with `mesh.testing.fake_roles`."""
        result, _ = await _execute(fake_roles(prover=_prover, fixer=_fixer))
        assert [o.state for o in result.outcomes] == ["completed", "completed"]

    @pytest.mark.parametrize(
        ("role", "adapter", "code", "evidence"),
        [
            (
                "coder",
                lambda r: answers.reject(r, reason="contradicts an invariant"),
                mesh.FailureCode.REQUIRES_CLARIFICATION,
                "too few candidates",
            ),
            (
                "coder",
                lambda r: answers.no_diff(r, reason="done already"),
                mesh.FailureCode.REQUIRES_CLARIFICATION,
                "too few candidates",
            ),
            (
                "applier",
                lambda r: answers.apply_failed(
                    r, reason="outside src/", failure_code=mesh.FailureCode.SCOPE_VIOLATION
                ),
                mesh.FailureCode.SCOPE_VIOLATION,
                "outside src/",
            ),
            (
                "prover",
                lambda r: answers.proof(r, passed=False, command="pytest", evidence="1 failed"),
                mesh.FailureCode.PROOF_MISSING,
                "pytest: 1 failed",
            ),
            (
                "fixer",
                lambda r: answers.rework(
                    r, reason="drops the cache", failure_code=mesh.FailureCode.TOOLING_UNAVAILABLE
                ),
                mesh.FailureCode.TOOLING_UNAVAILABLE,
                "drops the cache",
            ),
            (
                "fixer",
                lambda r: answers.blocked_safety(r, reason="disables TLS checks"),
                mesh.FailureCode.SAFETY_REGRESSION_RISK,
                "disables TLS checks",
            ),
            (
                "integrator",
                lambda r: answers.blocked_delivery(r, reason="the branch moved"),
                mesh.FailureCode.DELIVERY_BLOCKED,
                "the branch moved",
            ),
        ],
        ids=[
            "reject",
            "no_diff",
            "apply_failed",
            "proof-failed",
            "rework",
            "blocked_safety",
            "blocked_delivery",
        ],
    )
    async def test_each_refusal_fails_the_unit_as_documented(
        self,
        anyio_backend: str,
        role: str,
        adapter: Callable[[Any], mesh.WorkerResult],
        code: mesh.FailureCode,
        evidence: str,
    ) -> None:
        """Each refusal builder ends the unit with its failure code and its reason as evidence."""
        result, _ = await _execute(_roles(**{role: adapter}), max_attempts=1)
        first = result.outcome("a")
        assert ("failed", code) == (first.state, first.failure_code)
        assert evidence in first.evidence
        assert result.outcome("b").state != "completed"

    async def test_a_denied_lease_is_waited_for(self, anyio_backend: str) -> None:
        """A lease denied once is asked for again (a requeue, not a failure)."""
        asked: list[str] = []

        def locksmith(request: mesh.LeaseRequest) -> mesh.WorkerResult:
            asked.append(request.action)
            if len(asked) == 1:
                return answers.lease(request, decision=D.DENY, lease_id="lease-x", reason="busy")
            return _locksmith(request)

        result, events = await _execute(_roles(locksmith=locksmith), lease_ttl=0.05)
        assert [o.state for o in result.outcomes] == ["completed", "completed"]
        assert [e.data["reason"] for e in events if e.event == "lease_denied"] == ["busy"]

    async def test_a_fixer_selecting_an_unknown_candidate(self, anyio_backend: str) -> None:
        """The builder refuses the verdict; the fixer says so instead, and nothing is delivered."""
        integrator = FakeAdapter(_integrator)

        def fixer(request: mesh.AdjudicationRequest) -> mesh.WorkerResult:
            try:
                return answers.verdict(request, select=f"{request.unit.id}-coder-9")
            except mesh.InvalidOutputSchema as refused:
                return answers.rework(request, reason=refused.problems[0])

        result, _ = await _execute(_roles(fixer=fixer, integrator=integrator), max_attempts=1)
        first = result.outcome("a")
        assert first.state == "failed"
        assert first.evidence == "$.selected_candidate: 'a-coder-9' is not a proven candidate"
        assert integrator.calls == []
