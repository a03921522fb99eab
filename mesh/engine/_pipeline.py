"""
The unit pipeline: one unit's stages, each a small function over its `UnitProgress`.

`UnitPipeline.drive` runs attempts until the unit completes, fails or runs out
of attempts; `_attempt` is the one place where a resumed unit's stage is
picked: candidates recorded before a stop are not written again, recorded
proofs are not run again, and a recorded verdict whose quorum still holds is
not asked again. Stages call adapters only through the call gateway and leases
only through the lease keeper; every transition is one ledger event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import attrs

from ..contracts._contract import checked_result_document
from ..contracts._enums import Decision, FailureCode, Lane, ProofStatus
from ..contracts._events import Ledger
from ..contracts._records import WorkerResult
from ._fanout import concurrently_on_running_loop
from ._gateway import CallFailure, CallGateway
from ._leases import Holder, LeaseKeeper
from ._lifecycle import Trigger, UnitProgress, attempts_remain, enough_candidates
from ._machine import UnitMachine
from ._plan_state import CompletedStep, with_completed
from ._results import UnitCheckpoint
from ._roles import AdjudicationRequest, ApplyRequest, AuthorRequest, DeliveryRequest, ProofRequest

if TYPE_CHECKING:
    from ._tracing import Tracing

__all__ = ["UnitPipeline"]

_MACHINE: Final = UnitMachine()
_AUTHOR_LANES: Final = (Lane.CODER, Lane.CODER, Lane.REDUCER)
_Proven = tuple[tuple[WorkerResult, WorkerResult], ...]
# The stages a traced run puts in spans of their own: method, span name (``mesh.NAME``).
_STAGES: Final = (
    ("_generate", "generation"),
    ("_unit_lease", "lease"),
    ("_proofs", "proof"),
    ("_adjudicate", "adjudication"),
    ("_deliver", "delivery"),
)


@final
class UnitPipeline:
    """
    Drives units through candidates, proofs, adjudication and delivery.

    Args:
        gateway: How adapters are called.
        leases: How write-scope leases are taken and given back.
        ledger: Where transitions and stage events go.
        run_id: Names the run in delivery idempotency keys.
        plan_state: The update_plan state before any delivery of this run.
        step_of: The plan step index of each unit.
        checkpoints: Where each unit of a resumed run stood.
        resolve_base: Turns a unit's base into a commit when an attempt starts.
        tracing: Given in a traced run: each stage of an attempt is a span.
    """

    def __init__(
        self,
        *,
        gateway: CallGateway,
        leases: LeaseKeeper,
        ledger: Ledger,
        run_id: str,
        plan_state: Mapping[str, Any],
        step_of: Mapping[str, int],
        checkpoints: Mapping[str, UnitCheckpoint],
        resolve_base: Callable[[str], Awaitable[str]] | None = None,
        rerun_safe_integrator: bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self._resolve_base = resolve_base
        self._rerun_safe_integrator = rerun_safe_integrator
        self._gateway = gateway
        self._leases = leases
        self._ledger = ledger
        self._run_id = run_id
        self._plan_base = plan_state
        self._delivered: list[int] = []
        """The plan steps this run delivered, in order (only appended to)."""
        self._step_of = step_of
        self._checkpoints = checkpoints
        # One delivery at a time: each builds on the plan state the previous one wrote.
        self._delivery_lock = anyio.Lock(fast_acquire=True)
        self._concurrently = concurrently_on_running_loop()
        self._unit_lease = leases.unit_lease
        if tracing is not None:  # wrapped only when traced: untraced runs pay nothing
            for method, stage in _STAGES:
                setattr(self, method, tracing.stage(stage, getattr(self, method)))

    def replan(
        self, plan_state: Mapping[str, Any], step_of: Mapping[str, int], *, completed: list[int]
    ) -> None:
        """Deliver into a changed plan's state from now on (its completed steps marked)."""
        self._plan_base = with_completed(plan_state, completed)
        self._delivered = []
        self._step_of = step_of

    def written_plan_state(self) -> dict[str, Any]:
        """The plan state as the integrator last wrote it, as a dict of its own."""
        return with_completed(self._plan_base, self._delivered)

    # -- the lifecycle -------------------------------------------------------------

    def fire(self, progress: UnitProgress, trigger: Trigger) -> None:
        """Move ``progress`` through the state machine and record the transition."""
        before, after = _MACHINE.fire(progress, trigger)
        self._ledger.emit(
            "unit_transition",
            unit_id=progress.unit.id,
            attempt=progress.attempt,
            trigger=trigger._value_,
            from_state=before._value_,
            to_state=after._value_,
        )

    def fail(self, progress: UnitProgress, code: FailureCode, evidence: str) -> None:
        progress.failure_code = code
        progress.evidence = evidence or code.value
        self.fire(progress, Trigger.FAIL)

    def _end_attempt(
        self, progress: UnitProgress, failure: CallFailure, *, rework: bool = True
    ) -> bool:
        """End a failed attempt: start the next one when allowed and left (True), else fail."""
        progress.note(failure.evidence)
        if rework and attempts_remain(progress):
            self.fire(progress, Trigger.REWORK)
            progress.start_next_attempt()
            self._ledger.emit(
                "rework",
                unit_id=progress.unit.id,
                attempt=progress.attempt,
                reason=failure.code.value,
                evidence=failure.evidence,
            )
            return True
        self.fail(progress, failure.code, failure.evidence)
        return False

    async def drive(self, holder: Holder, width: Callable[[], int]) -> None:
        """Run the unit's attempts to the end; ``width()`` is the current number of authors."""
        progress = holder.progress
        # A restart picks a unit up at the furthest stage its events recorded.
        checkpoint = self._checkpoints.get(progress.unit.id)
        if checkpoint is not None and (interrupted := self._unsafe_to_redo(checkpoint)):
            self.fail(
                progress,
                FailureCode.REQUIRES_CLARIFICATION,
                f"{interrupted} was made before the run stopped and its result was not "
                "recorded; its adapter is not safe to re-run: check what it did before "
                "running this unit again",
            )
            return
        resumed = checkpoint if checkpoint is not None and checkpoint.candidates else None
        while True:
            progress.width = width()
            if not await self._attempt(holder, resumed):
                return
            resumed = None

    def _unsafe_to_redo(self, checkpoint: UnitCheckpoint) -> str | None:
        """The interrupted call a resume must not make again (None: everything may be redone)."""
        if checkpoint.interrupted:
            return checkpoint.interrupted[0]
        if checkpoint.accepted is not None and not self._rerun_safe_integrator:
            return f"the delivery of {checkpoint.accepted}"
        return None

    async def _attempt(self, holder: Holder, resumed: UnitCheckpoint | None) -> bool:
        """Run one attempt of a unit: True when it ended in rework (run the next one)."""
        progress = holder.progress
        failure = None if resumed else await self._generate(progress)
        if not enough_candidates(progress):
            too_few = CallFailure(
                code=FailureCode.REQUIRES_CLARIFICATION,
                evidence="the authors produced too few candidates",
            )
            return self._end_attempt(progress, failure or too_few)
        self.fire(progress, Trigger.CANDIDATES_GENERATED)
        if resumed is None:
            self._ledger.emit(
                "candidates_recorded",
                unit_id=progress.unit.id,
                attempt=progress.attempt,
                candidates=[checked_result_document(c) for c in progress.candidates],
            )
        failures = await self._proofs(holder, resumed)
        if isinstance(failures, CallFailure):
            return self._end_attempt(progress, failures)
        self.fire(progress, Trigger.PROOFS_RECORDED)
        proven = tuple(
            (c, proof)
            for c in progress.candidates
            if (proof := progress.proofs.get(c.candidate_id)) is not None
            and proof.proof_status is ProofStatus.PASS
        )
        if not proven:
            return self._end_attempt(progress, _no_proof_reason(progress, failures))
        verdict = _recorded_verdict(progress, proven, resumed) or await self._adjudicate(
            progress, proven
        )
        if isinstance(verdict, CallFailure):
            return self._end_attempt(
                progress, verdict, rework=verdict.code is not FailureCode.SAFETY_REGRESSION_RISK
            )
        self.fire(progress, Trigger.QUORUM_REACHED)
        async with self._delivery_lock:
            delivery = await self._deliver(progress, verdict)
        if isinstance(delivery, CallFailure):
            return self._end_attempt(progress, delivery, rework=False)
        progress.delivery = delivery
        self.fire(progress, Trigger.DELIVERED)
        return False

    # -- stages --------------------------------------------------------------------

    async def _generate(self, progress: UnitProgress) -> CallFailure | None:
        """Ask the coders (and the reducer) for candidates; the first call failure."""
        unit = progress.unit
        if self._resolve_base is not None:
            # The authors start from one commit, the base as it stands now: their answers
            # carry it back, and every later stage applies the patch there.
            try:
                base = await self._resolve_base(unit.base_sha)
            except Exception as exc:  # noqa: BLE001 - the unit's failure, with what was said
                return CallFailure(
                    code=FailureCode.TOOLING_UNAVAILABLE,
                    evidence=f"base {unit.base_sha!r}: {type(exc).__name__}: {exc}",
                )
            unit = attrs.evolve(unit, base_sha=base)
        lanes = _AUTHOR_LANES[: progress.width]
        results: list[WorkerResult | CallFailure | None] = [None] * len(lanes)

        async def author(slot: int) -> None:
            lane, index = lanes[slot], slot + 1
            candidate_id = _candidate_id(progress, lane, index)
            request = AuthorRequest(
                unit=unit,
                lane=lane,
                candidate_id=candidate_id,
                triplet_index=index,
                attempt=progress.attempt,
            )
            results[slot] = await self._gateway.call(
                lane, request, unit=unit, attempt=progress.attempt, candidate_id=candidate_id
            )

        await self._concurrently(author, len(lanes))
        progress.candidates = [
            r
            for r in results
            if isinstance(r, WorkerResult) and r.decision is Decision.ACCEPT and r.patch
        ]
        # In slot order, not as the calls ended: the same run always reads the same.
        for lane, result in zip(lanes, results, strict=True):
            if isinstance(result, CallFailure):
                progress.note(result.evidence)
            elif isinstance(result, WorkerResult) and result.decision is not Decision.ACCEPT:
                reason = result.notes or result.proof_evidence.key_line or "no reason given"
                progress.note(f"{lane._value_}: {result.decision._value_}: {reason}")
        failures = [r for r in results if isinstance(r, CallFailure)]
        return failures[0] if failures else None

    async def _proofs(
        self, holder: Holder, resumed: UnitCheckpoint | None
    ) -> list[CallFailure] | CallFailure:
        """Prove every candidate, or take the proofs a stopped run recorded; the call failures."""
        progress = holder.progress
        # One lease on the unit's write scope covers all its candidates, and every later
        # attempt: it is held (and renewed) until the unit ends. A resumed unit's lease
        # died with the process that held it, and even recorded proofs need a new one.
        lease_id = await self._unit_lease(holder)
        if isinstance(lease_id, CallFailure):
            return lease_id
        if resumed is not None and resumed.proofs:
            progress.proofs = dict(resumed.proofs)
            return []
        # Indexed by candidate, so the evidence chosen later does not depend on which
        # concurrent proof happened to finish first.
        candidates = progress.candidates
        failures: list[CallFailure | None] = [None] * len(candidates)

        async def one(index: int) -> None:
            failures[index] = await self._prove(progress, candidates[index], lease_id)

        await self._concurrently(one, len(candidates))
        for candidate, failure in zip(candidates, failures, strict=True):
            proof = progress.proofs.get(candidate.candidate_id)
            if failure is not None:
                progress.note(failure.evidence)
            elif proof is not None and proof.proof_status is not ProofStatus.PASS:
                progress.note(_proof_problem(proof))
        self._ledger.emit(
            "proofs_recorded",
            unit_id=progress.unit.id,
            attempt=progress.attempt,
            proofs={
                cid: None if proof is None else checked_result_document(proof)
                for cid, proof in progress.proofs.items()
            },
        )
        return [failure for failure in failures if failure is not None]

    async def _prove(
        self, progress: UnitProgress, candidate: WorkerResult, lease_id: str
    ) -> CallFailure | None:
        """Apply one candidate under the unit's lease and run its proof, retried once."""
        unit, cid, attempt = progress.unit, candidate.candidate_id, progress.attempt
        progress.proofs[cid] = None
        request = ApplyRequest(
            unit=unit, candidate_id=cid, candidate=candidate, lease_id=lease_id, attempt=attempt
        )
        applied = await self._gateway.call(
            Lane.APPLIER, request, unit=unit, attempt=attempt, candidate_id=cid
        )
        if isinstance(applied, CallFailure):
            return applied
        if applied.decision is not Decision.APPLIED:
            key_line = applied.proof_evidence.key_line or (applied.notes or "did not apply")
            # The applier names why (scope_violation for the scope gate); else no proof can run.
            code = applied.failure_code or FailureCode.PROOF_MISSING
            return CallFailure(code=code, evidence=f"{cid}: {key_line}")
        for proof_attempt in (1, 2):
            proof_request = ProofRequest(
                unit=unit,
                candidate_id=cid,
                candidate=candidate,
                applied=applied,
                proof_attempt=proof_attempt,
                attempt=attempt,
            )
            proof = await self._gateway.call(
                Lane.PROVER, proof_request, unit=unit, attempt=attempt, candidate_id=cid
            )
            if isinstance(proof, CallFailure):
                return proof
            progress.proofs[cid] = proof
            if proof.proof_status is ProofStatus.PASS:
                return None
            if proof_attempt == 1:
                self._ledger.emit("proof_retry", unit_id=unit.id, candidate_id=cid, attempt=attempt)
        return None

    async def _adjudicate(self, progress: UnitProgress, proven: _Proven) -> str | CallFailure:
        """Ask the quorum's fixers; the accepted candidate, or why none was."""
        unit = progress.unit
        proven_ids = {c.candidate_id for c, _ in proven}
        rejected = tuple(c for c in progress.candidates if c.candidate_id not in proven_ids)
        quorum = progress.quorum
        verdicts: list[WorkerResult | CallFailure | None] = [None] * quorum

        async def fixer(index: int) -> None:
            cid = _candidate_id(progress, Lane.FIXER, index + 1)
            request = AdjudicationRequest(
                unit=unit,
                candidate_id=cid,
                proven=proven,
                rejected=rejected,
                fixer_index=index + 1,
                quorum_target=quorum,
                attempt=progress.attempt,
            )
            verdicts[index] = await self._gateway.call(
                Lane.FIXER, request, unit=unit, attempt=progress.attempt, candidate_id=cid
            )

        await self._concurrently(fixer, quorum)
        approvals: dict[str, int] = {}
        reasons: list[CallFailure] = []
        for verdict in verdicts:
            if isinstance(verdict, CallFailure) or verdict is None:
                reasons.append(
                    verdict
                    or CallFailure(code=FailureCode.TOOLING_UNAVAILABLE, evidence="no fixer")
                )
            elif verdict.decision is Decision.BLOCKED_SAFETY:
                evidence = (
                    verdict.notes or verdict.proof_evidence.key_line or "fixer blocked for safety"
                )
                return CallFailure(code=FailureCode.SAFETY_REGRESSION_RISK, evidence=evidence)
            elif verdict.decision is Decision.ACCEPTED and verdict.selected_candidate in proven_ids:
                # A selection the fixer was not shown as proven is an invalid answer already.
                selected = verdict.selected_candidate
                approvals[selected] = approvals.get(selected, 0) + 1
            else:
                code = verdict.failure_code or FailureCode.REQUIRES_CLARIFICATION
                reasons.append(
                    CallFailure(code=code, evidence=verdict.notes or "fixer asked for rework")
                )
        for reason in reasons:
            progress.note(reason.evidence)
        progress.approvals = approvals
        best = max(approvals, key=lambda cid: (approvals[cid], cid in proven_ids), default=None)
        if best is not None and approvals[best] >= quorum:
            progress.accepted = best
            return best
        if reasons:
            return reasons[0]
        return CallFailure(
            code=FailureCode.REQUIRES_CLARIFICATION,
            evidence=f"no candidate reached the quorum of {quorum} (approvals: {approvals})",
        )

    async def _deliver(self, progress: UnitProgress, accepted: str) -> WorkerResult | CallFailure:
        """Hand the accepted candidate to the integrator (under the delivery lock)."""
        unit = progress.unit
        candidate = next(c for c in progress.candidates if c.candidate_id == accepted)
        proof = progress.proofs[accepted]
        assert proof is not None  # noqa: S101 - the quorum gate already required a passing proof
        step = self._step_of[unit.id]
        plan_state = CompletedStep(self._plan_base, self._delivered, len(self._delivered), step)
        key = f"{self._run_id}/{unit.id}"
        approvals = progress.approvals.get(accepted, 0)
        # Recorded before the side effect, so that a restart knows to check the repository.
        self._ledger.emit(
            "delivery_started",
            unit_id=unit.id,
            candidate_id=accepted,
            attempt=progress.attempt,
            idempotency_key=key,
            approvals=approvals,
        )
        request = DeliveryRequest(
            unit=unit,
            candidate_id=accepted,
            candidate=candidate,
            proof=proof,
            approvals=approvals,
            plan_state=plan_state,
            attempt=progress.attempt,
            idempotency_key=key,
        )
        result = await self._gateway.call(
            Lane.INTEGRATOR, request, unit=unit, attempt=progress.attempt, candidate_id=accepted
        )
        if isinstance(result, CallFailure):
            return result
        if result.decision is Decision.BLOCKED_DELIVERY:
            evidence = (
                result.notes or result.proof_evidence.key_line or "integrator blocked delivery"
            )
            code = result.failure_code or FailureCode.DELIVERY_BLOCKED
            return CallFailure(code=code, evidence=evidence)
        # The integrator wrote it; the engine only records what was written.
        self._delivered.append(step)
        return result


def _candidate_id(progress: UnitProgress, lane: Lane, index: int) -> str:
    base = f"{progress.unit.id}-{lane._value_}-{index}"
    return base if progress.attempt == 1 else f"{base}-a{progress.attempt}"


def _recorded_verdict(
    progress: UnitProgress, proven: _Proven, resumed: UnitCheckpoint | None
) -> str | None:
    """The candidate a stopped run had started delivering, when its quorum still holds."""
    if resumed is None or resumed.accepted is None or resumed.approvals < progress.quorum:
        return None
    if resumed.accepted not in {c.candidate_id for c, _ in proven}:
        return None
    progress.accepted = resumed.accepted
    progress.approvals = {resumed.accepted: resumed.approvals}
    return resumed.accepted


def _proof_problem(proof: WorkerResult) -> str:
    """A failed proof as a problem: its command and key line."""
    evidence = proof.proof_evidence
    return f"{evidence.command}: {evidence.key_line}".strip(": ")


def _no_proof_reason(progress: UnitProgress, failures: Sequence[CallFailure]) -> CallFailure:
    failed_proofs = [p for p in progress.proofs.values() if p is not None]
    if failed_proofs:
        return CallFailure(
            code=FailureCode.PROOF_MISSING, evidence=_proof_problem(failed_proofs[-1])
        )
    # Without a proof record, every candidate stopped at a recorded call failure.
    return failures[0]
