"""Answer builders: records built checked from their request, and held to the full contract."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

import mesh
from mesh.contracts._contract import is_checked, recheck_worker_result
from mesh.engine import _answers as answers
from mesh.engine._roles import check_result

UNIT = mesh.Unit(
    id="u1", objective="add a flag", write_scope=("src/flags.py",), risk_tier=mesh.RiskTier.HIGH
)
REDUCE = mesh.ReduceRecord(
    target_abstraction="a",
    replacement_primitive="b",
    complexity_delta="-1",
    invariants_preserved=("c",),
    rollback_plan="revert",
)


class _Str(str):
    __slots__ = ()


def author(lane: mesh.Lane = mesh.Lane.CODER) -> mesh.AuthorRequest:
    return mesh.AuthorRequest(
        unit=UNIT, lane=lane, candidate_id=f"u1-{lane.value}-1", triplet_index=1, attempt=1
    )


def lease_request(ttl_ms: int = 1000) -> mesh.LeaseRequest:
    return mesh.LeaseRequest(
        unit=UNIT,
        candidate_id="u1-coder-1",
        action="acquire",
        holder="u1",
        write_scope=UNIT.write_scope,
        ttl_ms=ttl_ms,
    )


def built_answers() -> list[tuple[mesh.WorkerResult, mesh.Lane]]:
    """One answer per builder and decision, with the lane it answers for."""
    patch = answers.candidate(author(), patch="--- a/x\n+++ b/x\n", notes="n")
    reduced = answers.candidate(
        author(mesh.Lane.REDUCER), patch="p", reduce_record=REDUCE, challenge_findings=["f"]
    )
    apply = mesh.ApplyRequest(
        unit=UNIT, candidate_id=patch.candidate_id, candidate=patch, lease_id="l", attempt=1
    )
    applied = answers.applied(apply, worktree_path="/w")
    prove = mesh.ProofRequest(
        unit=UNIT,
        candidate_id=patch.candidate_id,
        candidate=patch,
        applied=applied,
        proof_attempt=2,
        attempt=1,
    )
    passed = answers.proof(prove, passed=True, command="pytest", evidence="1 passed")
    failed = answers.proof(prove, passed=False, evidence="1 failed", exit_code=1)
    adjudicate = mesh.AdjudicationRequest(
        unit=UNIT,
        candidate_id="u1-fixer-1",
        proven=((patch, passed),),
        rejected=(),
        fixer_index=1,
        quorum_target=3,
        attempt=1,
    )
    deliver = mesh.DeliveryRequest(
        unit=UNIT,
        candidate_id=patch.candidate_id,
        candidate=patch,
        proof=passed,
        approvals=3,
        plan_state={},
        attempt=1,
    )
    return [
        (patch, mesh.Lane.CODER),
        (reduced, mesh.Lane.REDUCER),
        (
            answers.lease(
                lease_request(), decision=mesh.Decision.GRANT, lease_id="l1", reason="ok"
            ),
            mesh.Lane.LOCKSMITH,
        ),
        (
            answers.lease(
                lease_request(0), decision=mesh.Decision.RECLAIM, lease_id="", reason="gone"
            ),
            mesh.Lane.LOCKSMITH,
        ),
        (applied, mesh.Lane.APPLIER),
        (passed, mesh.Lane.PROVER),
        (failed, mesh.Lane.PROVER),
        (answers.verdict(adjudicate, select=patch.candidate_id, notes="best"), mesh.Lane.FIXER),
        (answers.delivered(deliver, artifact_ref="memory://p"), mesh.Lane.INTEGRATOR),
        (answers.delivered(deliver, artifact_ref="abc123", commit=True), mesh.Lane.INTEGRATOR),
    ]


class TestBuiltAnswers:
    @pytest.mark.parametrize("index", range(10))
    def test_every_builder_passes_the_full_check(self, index: int) -> None:
        """A builder's record, copied (so not trusted), passes the contract check unchanged."""
        built, lane = built_answers()[index]
        assert is_checked(built)
        copy = attrs.evolve(built)
        assert not is_checked(copy)
        assert recheck_worker_result(copy) == built
        assert mesh.parse_worker_result(mesh.worker_result_document(built)) == built
        assert check_result(built, unit=UNIT, candidate_id=built.candidate_id, lane=lane) is built

    def test_fields_come_from_the_request(self) -> None:
        """Ids, lane, scope, risk and base come from the request; the caller gives the rest."""
        built = answers.candidate(author(), patch="p")
        assert (built.id, built.candidate_id, built.lane, built.write_scope, built.risk_tier) == (
            "u1",
            "u1-coder-1",
            mesh.Lane.CODER,
            ("src/flags.py",),
            mesh.RiskTier.HIGH,
        )
        assert built.decision is mesh.Decision.ACCEPT


class TestRefused:
    @pytest.mark.parametrize(
        ("build", "problem"),
        [
            (
                lambda: answers.candidate(author(), patch=3),  # type: ignore[arg-type]
                "$.patch: expected string, got int",
            ),
            (lambda: answers.candidate(author(), patch="  "), "$.patch: must not be blank"),
            (
                lambda: answers.candidate(author(), patch="\ud800"),
                "$.patch: not valid Unicode (a lone surrogate)",
            ),
            (
                lambda: answers.candidate(author(mesh.Lane.REDUCER), patch="p"),
                "$.reduce_record: a reducer's candidate needs a reduce_record",
            ),
            (
                lambda: answers.candidate(
                    author(),
                    patch="p",
                    reduce_record=attrs.evolve(REDUCE, rollback_plan=1),  # type: ignore[arg-type]
                ),
                "$.reduce_record: expected a ReduceRecord with exact field types",
            ),
            (
                lambda: answers.candidate(
                    author(),
                    patch="p",
                    reduce_record=attrs.evolve(REDUCE, invariants_preserved=("\udc00",)),
                ),
                "$.reduce_record.invariants_preserved: not valid Unicode (a lone surrogate)",
            ),
            (
                lambda: answers.candidate(author(), patch="p", challenge_findings=["ok", 2]),  # type: ignore[list-item]
                "$.challenge_findings[1]: expected string, got int",
            ),
            (
                lambda: answers.lease(
                    lease_request(), decision=mesh.Decision.ACCEPT, lease_id="l", reason="r"
                ),
                "$.decision: locksmith may not decide",
            ),
            (
                lambda: answers.lease(
                    lease_request(0), decision=mesh.Decision.GRANT, lease_id="l", reason="r"
                ),
                "$.ttl_ms: a granted lease needs ttl_ms > 0",
            ),
            (
                lambda: answers.lease(
                    lease_request(), decision=mesh.Decision.GRANT, lease_id="", reason="r"
                ),
                "$.lease_id: must not be blank",
            ),
        ],
    )
    def test_bad_values_are_invalid_answers(self, build: Any, problem: str) -> None:
        """What the caller supplies is checked strictly, with the field's path."""
        with pytest.raises(mesh.InvalidOutputSchema) as caught:
            build()
        assert caught.value.problems[0].startswith(problem)

    def test_request_numbers_and_flags(self) -> None:
        """Plain-string decisions, non-bool flags and requests the engine never makes: refused."""
        patch, _ = built_answers()[0]
        with pytest.raises(mesh.InvalidOutputSchema, match="locksmith may not decide"):
            answers.lease(lease_request(), decision="grant", lease_id="l", reason="r")  # type: ignore[arg-type]
        fixer_request = mesh.AuthorRequest(
            unit=UNIT, lane=mesh.Lane.FIXER, candidate_id="u1-fixer-1", triplet_index=1, attempt=1
        )
        with pytest.raises(mesh.InvalidOutputSchema, match="coder or the reducer"):
            answers.candidate(fixer_request, patch="p")
        prove = mesh.ProofRequest(
            unit=UNIT,
            candidate_id=patch.candidate_id,
            candidate=patch,
            applied=patch,
            proof_attempt=3,
            attempt=1,
        )
        with pytest.raises(mesh.InvalidOutputSchema, match="passed: expected True or False"):
            answers.proof(attrs.evolve(prove, proof_attempt=1), passed="no")  # type: ignore[arg-type]
        with pytest.raises(mesh.InvalidOutputSchema, match="needs 1 or 2, got 3"):
            answers.proof(prove, passed=True)
        adjudicate = mesh.AdjudicationRequest(
            unit=UNIT,
            candidate_id="u1-fixer-1",
            proven=((patch, patch),),
            rejected=(),
            fixer_index=1,
            quorum_target=5,
            attempt=1,
        )
        with pytest.raises(mesh.InvalidOutputSchema, match="high risk needs 3, got 5"):
            answers.verdict(adjudicate, select=patch.candidate_id)
        with pytest.raises(mesh.InvalidOutputSchema, match="selected_candidate: expected string"):
            answers.verdict(
                attrs.evolve(adjudicate, quorum_target=3), select=_Str(patch.candidate_id)
            )
        deliver = mesh.DeliveryRequest(
            unit=UNIT,
            candidate_id=patch.candidate_id,
            candidate=patch,
            proof=patch,
            approvals=3,
            plan_state={},
            attempt=1,
        )
        with pytest.raises(mesh.InvalidOutputSchema, match="commit: expected True or False"):
            answers.delivered(deliver, artifact_ref="a", commit=1)  # type: ignore[arg-type]

    def test_proofs_and_verdicts(self) -> None:
        """An exit code must be an integer; a verdict must select a proven candidate."""
        patch, _ = built_answers()[0]
        prove = mesh.ProofRequest(
            unit=UNIT,
            candidate_id=patch.candidate_id,
            candidate=patch,
            applied=patch,
            proof_attempt=1,
            attempt=1,
        )
        with pytest.raises(mesh.InvalidOutputSchema, match="exit_code: expected integer"):
            answers.proof(prove, passed=True, exit_code=True)
        adjudicate = mesh.AdjudicationRequest(
            unit=UNIT,
            candidate_id="u1-fixer-1",
            proven=(),
            rejected=(),
            fixer_index=1,
            quorum_target=3,
            attempt=1,
        )
        with pytest.raises(mesh.InvalidOutputSchema, match="is not a proven candidate"):
            answers.verdict(adjudicate, select="u1-coder-9")


pytestmark = pytest.mark.anyio


class TestLeaseTable:
    async def test_records_and_documents_agree(self) -> None:
        """The table's record answer and its document answer say the same thing."""
        records, documents = mesh.LeaseTable(), mesh.LeaseTable()
        for request in (lease_request(), attrs.evolve(lease_request(), holder="u2")):
            record = await records.answer(request)
            document = await documents(request)
            assert record == mesh.parse_worker_result(document)
            assert is_checked(record)
