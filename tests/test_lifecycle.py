"""The unit lifecycle: the transition table, its gates, and a stateful property test."""

from __future__ import annotations

import logging

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mesh
from mesh.engine._lifecycle import TERMINAL_STATES, TRANSITION_TABLE, UnitProgress
from mesh.engine._machine import UnitMachine
from mesh.testing import answer

MACHINE = UnitMachine()


def candidate(progress: UnitProgress, index: int, *, patch: bool = True) -> mesh.WorkerResult:
    request = mesh.AuthorRequest(
        unit=progress.unit,
        lane=mesh.Lane.CODER,
        candidate_id=f"{progress.unit.id}-coder-{index}",
        triplet_index=index,
        attempt=progress.attempt,
    )
    document = (
        answer(request)
        if patch
        else answer(request, decision="no_diff", patch=None, notes="nothing")
    )
    return mesh.parse_worker_result(document)


def proof(progress: UnitProgress, cid: str, *, passed: bool) -> mesh.WorkerResult:
    document = answer(
        mesh.ProofRequest(
            unit=progress.unit,
            candidate_id=cid,
            candidate=progress.candidates[0],
            applied=progress.candidates[0],
            proof_attempt=1,
            attempt=progress.attempt,
        ),
        decision="pass" if passed else "fail",
        proof_status="pass" if passed else "fail",
    )
    return mesh.parse_worker_result(document)


def progress_for(risk: str = "med", max_attempts: int = 2) -> UnitProgress:
    unit = mesh.Unit(id="u1", objective="do", risk_tier=mesh.RiskTier(risk))
    return UnitProgress(unit=unit, max_attempts=max_attempts)


def walk_to_completed(progress: UnitProgress) -> None:
    progress.candidates = [candidate(progress, 1), candidate(progress, 2)]
    MACHINE.fire(progress, mesh.Trigger.CANDIDATES_GENERATED)
    for c in progress.candidates:
        progress.proofs[c.candidate_id] = proof(progress, c.candidate_id, passed=True)
    MACHINE.fire(progress, mesh.Trigger.PROOFS_RECORDED)
    progress.accepted = progress.candidates[0].candidate_id
    progress.approvals[progress.accepted] = progress.quorum
    MACHINE.fire(progress, mesh.Trigger.QUORUM_REACHED)
    progress.delivery = mesh.parse_worker_result(
        answer(
            mesh.DeliveryRequest(
                unit=progress.unit,
                candidate_id=progress.accepted,
                candidate=progress.candidates[0],
                proof=progress.proofs[progress.accepted],  # type: ignore[arg-type]
                approvals=progress.quorum,
                plan_state={},
                attempt=1,
            )
        )
    )
    MACHINE.fire(progress, mesh.Trigger.DELIVERED)


class TestTable:
    def test_happy_path(self) -> None:
        """Planned → candidates_ready → proofs_ready → fixer_accept → completed."""
        progress = progress_for()
        walk_to_completed(progress)
        assert progress.state == mesh.UnitState.COMPLETED

    def test_the_machine_writes_nothing_to_the_hosts_logs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Moves, refused triggers and unmet gates alike: nothing from transitions at any level."""
        caplog.set_level(logging.DEBUG)
        progress = progress_for()
        with pytest.raises(mesh.GateNotMet):
            MACHINE.fire(progress, mesh.Trigger.CANDIDATES_GENERATED)
        walk_to_completed(progress)
        with pytest.raises(mesh.TransitionError):
            MACHINE.fire(progress, mesh.Trigger.REWORK)
        assert progress.state == mesh.UnitState.COMPLETED
        assert caplog.records == []

    def test_terminal_states_refuse_every_trigger(self) -> None:
        """No trigger is legal from completed or failed."""
        progress = progress_for()
        walk_to_completed(progress)
        for trigger in mesh.Trigger:
            with pytest.raises(mesh.TransitionError, match="is not allowed from state 'completed'"):
                MACHINE.fire(progress, trigger)

    def test_illegal_trigger(self) -> None:
        """Skipping a stage is a TransitionError naming unit, state and trigger."""
        progress = progress_for()
        with pytest.raises(mesh.TransitionError) as caught:
            MACHINE.fire(progress, mesh.Trigger.DELIVERED)
        assert (
            caught.value.unit_id,
            caught.value.state,
            caught.value.trigger,
        ) == ("u1", "planned", "delivered")
        assert progress.state == "planned"

    def test_candidate_gate(self) -> None:
        """One candidate with a patch is not enough; a no_diff does not count."""
        progress = progress_for()
        progress.candidates = [candidate(progress, 1), candidate(progress, 2, patch=False)]
        with pytest.raises(mesh.GateNotMet) as caught:
            MACHINE.fire(progress, mesh.Trigger.CANDIDATES_GENERATED)
        assert caught.value.gate == "enough_candidates"

    def test_narrow_width_needs_one_candidate(self) -> None:
        """Under a width of 1 (critical budget), one candidate suffices."""
        progress = progress_for()
        progress.width = 1
        progress.candidates = [candidate(progress, 1)]
        MACHINE.fire(progress, mesh.Trigger.CANDIDATES_GENERATED)
        assert progress.state == "candidates_ready"

    def test_proof_gate_needs_every_candidate(self) -> None:
        """A candidate without a final proof record blocks proofs_ready."""
        progress = progress_for()
        progress.candidates = [candidate(progress, 1), candidate(progress, 2)]
        MACHINE.fire(progress, mesh.Trigger.CANDIDATES_GENERATED)
        progress.proofs["u1-coder-1"] = proof(progress, "u1-coder-1", passed=True)
        with pytest.raises(mesh.GateNotMet, match="proofs_final"):
            MACHINE.fire(progress, mesh.Trigger.PROOFS_RECORDED)

    @pytest.mark.parametrize(("risk", "quorum"), [("low", 1), ("med", 2), ("high", 3)])
    def test_quorum_by_risk(self, risk: str, quorum: int) -> None:
        """Acceptance needs low 1, med 2, high 3 approvals of one proven candidate."""
        progress = progress_for(risk)
        progress.candidates = [candidate(progress, 1), candidate(progress, 2)]
        MACHINE.fire(progress, mesh.Trigger.CANDIDATES_GENERATED)
        for c in progress.candidates:
            progress.proofs[c.candidate_id] = proof(progress, c.candidate_id, passed=True)
        MACHINE.fire(progress, mesh.Trigger.PROOFS_RECORDED)
        progress.accepted = "u1-coder-1"
        progress.approvals["u1-coder-1"] = quorum - 1
        with pytest.raises(mesh.GateNotMet, match="quorum_met"):
            MACHINE.fire(progress, mesh.Trigger.QUORUM_REACHED)
        progress.approvals["u1-coder-1"] = quorum
        MACHINE.fire(progress, mesh.Trigger.QUORUM_REACHED)
        assert progress.state == "fixer_accept"

    def test_quorum_needs_a_passing_proof(self) -> None:
        """Approvals of a candidate whose proof failed never reach fixer_accept."""
        progress = progress_for("low")
        progress.candidates = [candidate(progress, 1), candidate(progress, 2)]
        MACHINE.fire(progress, mesh.Trigger.CANDIDATES_GENERATED)
        for c in progress.candidates:
            progress.proofs[c.candidate_id] = proof(progress, c.candidate_id, passed=False)
        MACHINE.fire(progress, mesh.Trigger.PROOFS_RECORDED)
        progress.accepted, progress.approvals["u1-coder-1"] = "u1-coder-1", 5
        with pytest.raises(mesh.GateNotMet):
            MACHINE.fire(progress, mesh.Trigger.QUORUM_REACHED)

    def test_rework_within_attempt_budget(self) -> None:
        """Rework returns to planned while attempts remain, then is refused."""
        progress = progress_for(max_attempts=2)
        MACHINE.fire(progress, mesh.Trigger.REWORK)
        progress.start_next_attempt()
        assert (progress.state, progress.attempt) == ("planned", 2)
        with pytest.raises(mesh.GateNotMet, match="attempts_remain"):
            MACHINE.fire(progress, mesh.Trigger.REWORK)

    def test_fail_needs_exactly_one_code(self) -> None:
        """A unit fails only with a failure code and its evidence."""
        progress = progress_for()
        with pytest.raises(mesh.GateNotMet, match="has_failure_code"):
            MACHINE.fire(progress, mesh.Trigger.FAIL)
        progress.failure_code, progress.evidence = (
            mesh.FailureCode.PROOF_MISSING,
            "pytest: 1 failed",
        )
        MACHINE.fire(progress, mesh.Trigger.FAIL)
        assert progress.state == "failed"

    def test_table_covers_every_state(self) -> None:
        """Every non-terminal state has a way out; terminal states have none."""
        sources = {state for row in TRANSITION_TABLE for state in row.sources}
        assert sources == set(mesh.UnitState) - TERMINAL_STATES


class LifecycleMachine(RuleBasedStateMachine):
    """
    Random evidence and random triggers never break the lifecycle's invariants.

    Evidence only changes while the unit is active: its task is the single writer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.progress = progress_for(max_attempts=3)

    @rule(trigger=st.sampled_from(list(mesh.Trigger)))
    def fire(self, trigger: mesh.Trigger) -> None:
        before = self.progress.state
        try:
            MACHINE.fire(self.progress, trigger)
        except mesh.TransitionError:
            assert self.progress.state == before
            return
        if trigger is mesh.Trigger.REWORK:
            self.progress.start_next_attempt()

    @precondition(lambda self: self.progress.state not in TERMINAL_STATES)
    @rule(count=st.integers(0, 3), with_patch=st.booleans())
    def write_candidates(self, count: int, with_patch: bool) -> None:  # noqa: FBT001 - hypothesis rule
        self.progress.candidates = [
            candidate(self.progress, i + 1, patch=with_patch) for i in range(count)
        ]

    @precondition(lambda self: self.progress.state not in TERMINAL_STATES)
    @rule(passed=st.booleans(), which=st.integers(0, 2))
    def record_proof(self, passed: bool, which: int) -> None:  # noqa: FBT001 - hypothesis rule
        if which < len(self.progress.candidates):
            cid = self.progress.candidates[which].candidate_id
            self.progress.proofs[cid] = proof(self.progress, cid, passed=passed)

    @precondition(lambda self: self.progress.state not in TERMINAL_STATES)
    @rule(approvals=st.integers(0, 3), which=st.integers(0, 2))
    def approve(self, approvals: int, which: int) -> None:
        cid = f"u1-coder-{which + 1}"
        self.progress.accepted = cid
        self.progress.approvals[cid] = approvals

    @precondition(lambda self: self.progress.state not in TERMINAL_STATES)
    @rule()
    def deliver(self) -> None:
        if self.progress.candidates and self.progress.accepted in self.progress.proofs:
            walk_delivery = self.progress.proofs[self.progress.accepted]
            if walk_delivery is not None:
                self.progress.delivery = mesh.parse_worker_result(
                    answer(
                        mesh.DeliveryRequest(
                            unit=self.progress.unit,
                            candidate_id=self.progress.accepted or "",
                            candidate=self.progress.candidates[0],
                            proof=walk_delivery,
                            approvals=2,
                            plan_state={},
                            attempt=1,
                        )
                    )
                )

    @precondition(lambda self: self.progress.state not in TERMINAL_STATES)
    @rule(code=st.sampled_from(list(mesh.FailureCode)))
    def set_failure(self, code: mesh.FailureCode) -> None:
        self.progress.failure_code, self.progress.evidence = code, "evidence"

    @invariant()
    def state_is_known(self) -> None:
        assert self.progress.state in set(mesh.UnitState)

    @invariant()
    def completed_means_accepted_proven_and_delivered(self) -> None:
        if self.progress.state == mesh.UnitState.COMPLETED:
            accepted = self.progress.accepted
            assert accepted is not None
            assert self.progress.approvals[accepted] >= self.progress.quorum
            passing = self.progress.proofs[accepted]
            assert passing is not None
            assert passing.proof_status is mesh.ProofStatus.PASS
            assert self.progress.delivery is not None

    @invariant()
    def failed_means_one_code(self) -> None:
        if self.progress.state == mesh.UnitState.FAILED:
            assert isinstance(self.progress.failure_code, mesh.FailureCode)
            assert self.progress.evidence

    @invariant()
    def attempts_within_budget(self) -> None:
        assert 1 <= self.progress.attempt <= self.progress.max_attempts


TestLifecycleMachine = LifecycleMachine.TestCase
