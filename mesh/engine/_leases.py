"""
Write-scope leases of a run: acquired through the locksmith, renewed while held, released.

A denied lease is waited for (a release, or the lease's time to live), never
failed. A held lease is renewed a third of the way through its life while its
holder works; one the locksmith will not renew is lost, and the holder's work
stops before delivery.
"""

from __future__ import annotations

from typing import Final, Literal, final

import anyio
import attrs

from ..contracts._clock import Clock
from ..contracts._enums import Decision, Lane
from ..contracts._events import Ledger
from ..contracts._records import WorkerResult
from ._fanout import cancel_scope_class
from ._gateway import CallFailure, CallGateway, until
from ._lifecycle import UnitProgress, UnitState
from ._roles import LeaseRequest

__all__ = ["Holder", "LeaseKeeper"]

_ACQUIRE: Final = "acquire"
_Action = Literal["acquire", "release"]


@attrs.define
class Holder:
    """A unit at work and the leases it holds, which the renewer keeps alive meanwhile."""

    progress: UnitProgress
    leases: dict[str, None] = attrs.field(factory=dict)
    work: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    lost: str | None = None
    removed: bool = False
    """The unit was left out of the plan: its work was cancelled for that."""


@final
class LeaseKeeper:
    """Every lease of a run, through one locksmith reached by the call gateway."""

    def __init__(self, *, gateway: CallGateway, ledger: Ledger, clock: Clock, ttl_ms: int) -> None:
        self._gateway = gateway
        self._ledger = ledger
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._holders: dict[str, Holder] = {}
        self._scope_class = cancel_scope_class()
        # Made when a denied unit waits for it: most releases wake nobody. The count tells
        # a denied unit whether a release came while its request was being judged.
        self._released: anyio.Event | None = None
        self._releases = 0
        self._granted = anyio.Event()

    def hold(self, progress: UnitProgress) -> Holder:
        """Register a unit that starts its work (its leases are renewed until `drop`)."""
        holder = self._holders[progress.unit.id] = Holder(
            progress=progress, work=self._scope_class()
        )
        return holder

    def drop(self, holder: Holder) -> None:
        del self._holders[holder.progress.unit.id]

    def _request(
        self,
        progress: UnitProgress,
        candidate_id: str,
        action: _Action,
        lease_id: str | None = None,
    ) -> LeaseRequest:
        unit = progress.unit
        return LeaseRequest(
            unit=unit,
            candidate_id=candidate_id,
            action=action,
            holder=unit.id,
            write_scope=unit.write_scope,
            ttl_ms=self._ttl_ms,
            lease_id=lease_id,
        )

    async def _ask(
        self, progress: UnitProgress, request: LeaseRequest, action: str
    ) -> WorkerResult | CallFailure:
        return await self._gateway.call(
            Lane.LOCKSMITH,
            request,
            unit=progress.unit,
            attempt=progress.attempt,
            candidate_id=request.candidate_id,
            action=action,
        )

    async def unit_lease(self, holder: Holder) -> str | CallFailure:
        """
        The lease on the holder's write scope: the one it holds, else a new one; or why not.

        A held lease is the renewer's to keep alive, so holding one costs no call here.
        """
        for lease_id in holder.leases:
            return lease_id
        progress = holder.progress
        while True:
            releases = self._releases
            request = self._request(progress, _lease_call_id(progress), _ACQUIRE)
            answer = await self._ask(progress, request, _ACQUIRE)
            if isinstance(answer, CallFailure):
                return answer
            if answer.decision is Decision.GRANT and answer.lease_id:
                holder.leases[answer.lease_id] = None
                self._granted.set()
                return answer.lease_id
            # Denied work is requeued, never failed: wait for a release, or the lease TTL.
            self._ledger.emit(
                "lease_denied",
                unit_id=progress.unit.id,
                candidate_id=request.candidate_id,
                attempt=progress.attempt,
                reason=answer.notes or answer.proof_evidence.key_line,
            )
            if self._releases != releases:
                continue  # a lease went back while the locksmith judged: ask again at once
            if self._released is None:
                self._released = anyio.Event()
            released = self._released
            deadline = self._clock.current_time() + self._ttl_ms / 1000
            await until(self._clock, released.wait, deadline)

    async def release(self, progress: UnitProgress, leases: dict[str, None]) -> None:
        """Give back every lease in ``leases`` (emptying it) and wake the denied."""
        for lease_id in list(leases):
            request = self._request(progress, _lease_call_id(progress), "release", lease_id)
            await self._ask(progress, request, "release")
            del leases[lease_id]
        # Wake units whose lease was denied; later waiters wait for the next release.
        self._releases += 1
        if self._released is not None:
            self._released.set()
            self._released = None

    async def renew_forever(self) -> None:
        """
        Renew every held lease a third of the way through its life, while its holder works.

        A lease so expires only when its holder is gone. One the locksmith will
        not renew is lost: the holder's work stops (before delivery) and the unit
        fails with ``scope_overlap_conflict``, since another may be writing now.
        """
        period = self._ttl_ms / 3000
        while True:
            if not any(holder.leases for holder in self._holders.values()):
                await self._granted.wait()
                self._granted = anyio.Event()
            await self._clock.sleep_until(self._clock.current_time() + period)
            for holder in list(self._holders.values()):
                if holder.leases and holder.lost is None:
                    await self._renew(holder)

    async def _renew(self, holder: Holder) -> None:
        progress = holder.progress
        unit = progress.unit
        request = self._request(progress, _lease_call_id(progress), _ACQUIRE)
        answer = await self._ask(progress, request, "renew")
        granted = (
            answer.lease_id
            if isinstance(answer, WorkerResult) and answer.decision is Decision.GRANT
            else None
        )
        if granted is not None and granted in holder.leases:
            return
        if granted is not None:
            # Granted anew (the held lease was gone, or the unit finished meanwhile): not
            # a lease any work holds, so it goes back at once, even as the run ends.
            with anyio.CancelScope(shield=True):
                await self.release(progress, {granted: None})
        if self._holders.get(unit.id) is not holder:
            return  # the unit finished while its lease was being renewed
        reason = (
            answer.evidence
            if isinstance(answer, CallFailure)
            else "it had expired"
            if granted is not None
            else answer.notes or answer.proof_evidence.key_line or answer.decision.value
        )
        holder.lost = f"the lease on {list(unit.write_scope)} was lost: {reason}"
        self._ledger.emit("lease_lost", unit_id=unit.id, attempt=progress.attempt, reason=reason)
        if progress.state != UnitState.FIXER_ACCEPT:  # a delivery under way finishes
            holder.work.cancel()


def _lease_call_id(progress: UnitProgress) -> str:
    """The candidate id of a unit's lease calls: the lease is the unit's, not a candidate's."""
    return f"{progress.unit.id}-lease"
