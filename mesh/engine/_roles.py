"""
Role adapters: what each role is asked, how it is called, how its answer is checked.

An adapter is any callable taking one request record; it may be sync or async.
Async adapters run in the unit's task; sync ones run in a worker thread so a
blocking adapter never stalls the scheduler. Every answer goes through the
strict output-contract parser, and must be about the unit, candidate and lane
it was asked about.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Final, Literal, TypeVar

import anyio
import anyio.to_thread
import attrs

from ..contracts._clock import Clock
from ..contracts._contract import parse_worker_result, recheck_worker_result, take_checked
from ..contracts._enums import Decision, Lane
from ..contracts._errors import InputError, InvalidOutputSchema
from ..contracts._records import Unit, WorkerResult
from ..contracts._scopes import ScopeIndex, scopes_overlap
from ..contracts._text import one_line
from . import _answers as answers
from ._plan_state import CompletedStep

__all__ = [
    "AdjudicationRequest",
    "ApplyRequest",
    "AuthorRequest",
    "DeliveryRequest",
    "LeaseRequest",
    "LeaseTable",
    "ProofRequest",
    "Roles",
    "check_result",
    "check_selection",
    "invoke",
    "is_rerun_safe",
    "not_rerun_safe",
    "preflight_problems",
    "rerun_safe",
]

RequestT = TypeVar("RequestT")
Adapter = Callable[[RequestT], object] | Callable[[RequestT], Awaitable[object]]
"""A role adapter: a sync or async callable taking one request record."""


@attrs.frozen(kw_only=True)
class AuthorRequest:
    """
    Asks a coder or reducer for one candidate.

    .. versionadded:: 0.1.0
    """

    unit: Unit
    lane: Lane
    candidate_id: str
    triplet_index: int
    attempt: int
    """The unit's attempt (rework starts a new one)."""
    call: int = 1
    """1 for the first call, 2 for the retry after a timeout, 3 for the replacement."""


@attrs.frozen(kw_only=True)
class LeaseRequest:
    """
    Asks the locksmith to acquire or release the unit's write-scope lease.

    .. versionadded:: 0.1.0
    """

    unit: Unit
    candidate_id: str
    action: Literal["acquire", "release"]
    holder: str
    """Who holds the lease: the unit id (its candidates share it)."""
    write_scope: tuple[str, ...]
    ttl_ms: int
    lease_id: str | None = None
    call: int = 1


@attrs.frozen(kw_only=True)
class ApplyRequest:
    """
    Asks the applier to apply one candidate in its own worktree at ``unit.base_sha``.

    .. versionadded:: 0.1.0
    """

    unit: Unit
    candidate_id: str
    """The id the answer must carry: the candidate's."""
    candidate: WorkerResult
    lease_id: str
    attempt: int
    call: int = 1


@attrs.frozen(kw_only=True)
class ProofRequest:
    """
    Asks the prover to run ``unit.proof_command`` where the candidate was applied.

    .. versionadded:: 0.1.0
    """

    unit: Unit
    candidate_id: str
    """The id the answer must carry: the candidate's."""
    candidate: WorkerResult
    applied: WorkerResult
    proof_attempt: int
    """1, or 2 for the one retry after a failed proof."""
    attempt: int
    call: int = 1


@attrs.frozen(kw_only=True)
class AdjudicationRequest:
    """
    Asks one fixer to judge the proven candidates.

    ``proven`` pairs each candidate with its passing proof; only those may be accepted.

    .. versionadded:: 0.1.0
    """

    unit: Unit
    candidate_id: str
    """The id the answer must carry: this fixer's own row id."""
    proven: tuple[tuple[WorkerResult, WorkerResult], ...]
    rejected: tuple[WorkerResult, ...]
    """Candidates whose patch did not apply or whose proof failed."""
    fixer_index: int
    quorum_target: int
    attempt: int
    call: int = 1


@attrs.frozen(kw_only=True)
class DeliveryRequest:
    """
    Asks the integrator to deliver the accepted candidate and write plan state.

    ``plan_state`` is the update_plan document with this unit's step completed;
    the integrator is the only writer of it.

    .. versionadded:: 0.1.0
    """

    unit: Unit
    candidate_id: str
    """The id the answer must carry: the accepted candidate's."""
    candidate: WorkerResult
    proof: WorkerResult
    approvals: int
    plan_state: Mapping[str, Any] = attrs.field(hash=False)
    attempt: int
    idempotency_key: str = ""
    """Names this delivery across restarts (``RUN/UNIT``): an integrator that finds it
    already delivered (a commit trailer, an artifact) must not deliver it again."""
    call: int = 1


class _WrittenOnRead:
    """
    `DeliveryRequest.plan_state`'s slot, read through: a state not yet written out is on read.

    The engine hands each delivery a `CompletedStep`, which names the plan state
    rather than copying it; whoever reads the field (an integrator, ``repr``,
    equality, ``attrs.asdict``, pickling) gets the dict it stands for, so the
    request looks and behaves as if it held the dict from the start.
    """

    def __init__(self, slot: Any) -> None:  # noqa: ANN401 - the slot's member descriptor
        self._slot = slot

    def __get__(self, request: object, owner: type | None = None) -> Any:  # noqa: ANN401
        if request is None:
            return self
        state = self._slot.__get__(request, owner)
        return state.document() if type(state) is CompletedStep else state

    def __set__(self, request: object, value: object) -> None:
        self._slot.__set__(request, value)


setattr(  # noqa: B010 - a class attribute attrs made, which type checkers see as the field
    DeliveryRequest, "plan_state", _WrittenOnRead(DeliveryRequest.__dict__["plan_state"])
)


@attrs.frozen(kw_only=True)
class Roles:
    """
    The adapters of a run, one per role.

    Candidates come from ``coder`` (indexes 1 and 2) and ``reducer`` (index 3);
    the budget's triplet width decides how many. ``replacements`` maps a lane to
    the adapter tried after a call timed out twice.

    On a repository (``mesh.run(plan, repo=..., out=...)``) only ``coder`` is
    needed: every role left as None is played by mesh's own git adapter
    (`GitApplier`, `CommandProver`, `MechanicalFixer`, `GitIntegrator`, and a
    `LeaseTable` locksmith). Without a repository, ``applier``, ``prover``,
    ``fixer`` and ``integrator`` must be given too.

    .. versionadded:: 0.1.0
    """

    coder: Adapter[AuthorRequest]
    applier: Adapter[ApplyRequest] | None = None
    prover: Adapter[ProofRequest] | None = None
    fixer: Adapter[AdjudicationRequest] | None = None
    integrator: Adapter[DeliveryRequest] | None = None
    reducer: Adapter[AuthorRequest] | None = None
    locksmith: Adapter[LeaseRequest] | None = None
    replacements: Mapping[Lane, Adapter[Any]] = attrs.field(factory=dict, hash=False)

    def for_lane(self, lane: Lane) -> Adapter[Any]:
        """The adapter playing ``lane`` (the locksmith must be set by then)."""
        adapter = self.for_lane_or_none(lane)
        assert adapter is not None, lane  # noqa: S101 - Orchestrator checks them all first
        return adapter

    def problems(self, *, required: Collection[Lane]) -> list[str]:
        """
        What is wrong with these roles, all at once: missing ones, and adapters of the wrong shape.

        An adapter must be callable with one request; a class passed instead of
        an instance, or a function taking no argument or two, is said here,
        before the first unit, instead of as a failed call in the middle of a run.
        """
        problems = []
        given = self.named()
        for name, adapter in given:
            if adapter is None:
                if any(lane.value == name for lane in required):
                    problems.append(f"roles.{name}: missing (no adapter plays this role)")
                continue
            if problem := _shape_problem(adapter):
                problems.append(f"roles.{name}: {problem}")
        if self.locksmith is not None and not is_rerun_safe(Lane.LOCKSMITH, self.locksmith):
            problems.append(
                "roles.locksmith: a locksmith is asked again after every restart (a lease dies "
                "with its process), so it cannot be declared not safe to re-run"
            )
        problems.extend(
            f"roles.replacements: keys are mesh.Lane members, got {lane!r}"
            for lane in self.replacements
            if not isinstance(lane, Lane)
        )
        return problems

    def named(self) -> list[tuple[str, Adapter[Any] | None]]:
        """Every role and replacement with its name (``prover``, ``replacements[coder]``)."""
        given: list[tuple[str, Adapter[Any] | None]] = [
            (lane.value, self.for_lane_or_none(lane)) for lane in Lane
        ]
        given += [
            (f"replacements[{getattr(lane, 'value', lane)}]", adapter)
            for lane, adapter in self.replacements.items()
        ]
        return given

    def for_lane_or_none(self, lane: Lane) -> Adapter[Any] | None:
        """The adapter playing ``lane``, or None when the role is left unset."""
        return {
            Lane.CODER: self.coder,
            Lane.REDUCER: self.reducer,
            Lane.LOCKSMITH: self.locksmith,
            Lane.APPLIER: self.applier,
            Lane.PROVER: self.prover,
            Lane.FIXER: self.fixer,
            Lane.INTEGRATOR: self.integrator,
        }[lane]


# A preflight's problems shown at most: enough to act on, never a flood.
_MOST_PREFLIGHT_PROBLEMS: Final = 20


async def preflight_problems(roles: Roles) -> list[str]:
    """
    Every problem the adapters find with themselves (their ``preflight()``), by role.

    A preflight may be async, or sync (run in a worker thread, so a slow one
    does not stall the event loop or Ctrl-C), and returns a list of problems;
    one that raises, or returns anything else, is a problem too. Each problem
    is made safe to print on one line; a role's problems past the twentieth
    are counted, not listed.
    """
    problems: list[str] = []
    for name, adapter in roles.named():
        found = await _preflight_of(adapter)
        if isinstance(found, str):
            problems.append(f"roles.{name}: {found}")
            continue
        problems.extend(f"roles.{name}: {problem}" for problem in found[:_MOST_PREFLIGHT_PROBLEMS])
        if len(found) > _MOST_PREFLIGHT_PROBLEMS:
            more = len(found) - _MOST_PREFLIGHT_PROBLEMS
            problems.append(f"roles.{name}: and {more} more problems")
    return [one_line(problem, 500) for problem in problems]


async def _preflight_of(adapter: object) -> list[str] | str:
    """An adapter's own problems, or what went wrong asking for them."""
    try:
        check = getattr(adapter, "preflight", None)
        if not callable(check):
            return []
        if inspect.iscoroutinefunction(check):
            found = await check()
        else:
            found = await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except Exception as exc:  # noqa: BLE001 - the adapter's own failure, reported as such
        return f"preflight() raised {_described(exc)}"
    if not isinstance(found, list | tuple) or not all(type(p) is str for p in found):
        if inspect.iscoroutine(found):
            found.close()  # a sync preflight's coroutine is never run: closed, not leaked
        return f"preflight() returned {type(found).__name__}, not a list of str"
    return list(found)


def _described(exc: BaseException) -> str:
    """``Type: message``, even for an exception whose message cannot be made."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - its __str__ failed too: the type still says something
        return type(exc).__name__


def _shape_problem(adapter: object) -> str | None:
    """Why ``adapter`` cannot be called with one request (None: it can, as far as Python says)."""
    if isinstance(adapter, type):
        return f"{adapter.__qualname__} is a class: pass an instance of it"
    if not callable(adapter):
        return f"expected a callable taking one request, got {type(adapter).__name__}"
    try:
        signature = inspect.signature(adapter)
    except (TypeError, ValueError):  # builtins and C callables without a signature: trust them
        return None
    try:
        signature.bind(object())
    except TypeError:
        return f"{_adapter_name(adapter)}{signature} cannot be called with one request"
    return None


def _adapter_name(adapter: object) -> str:
    return str(getattr(adapter, "__qualname__", type(adapter).__qualname__))


# Whether an interrupted call may be made again after a crash, when an adapter does not say.
# Delivering twice is the one harm mesh cannot undo: an integrator must declare it is safe.
_RERUN_SAFE_BY_DEFAULT: Final = frozenset(Lane) - {Lane.INTEGRATOR}

AdapterT = TypeVar("AdapterT")


def rerun_safe(adapter: AdapterT) -> AdapterT:
    """
    Declare ``adapter`` safe to call again for a request a crash interrupted.

    Use it on an integrator that delivers idempotently (it finds a delivery
    by its ``idempotency_key`` and does not make it twice); every other role
    is taken as safe to re-run unless it says otherwise (`not_rerun_safe`).
    Sets ``adapter.rerun_safe = True``; a class can set that attribute itself.

    .. versionadded:: 0.1.0
    """
    return _declared(adapter, safe=True)


def not_rerun_safe(adapter: AdapterT) -> AdapterT:
    """
    Declare that ``adapter`` must not be called again for a request a crash interrupted.

    For an adapter with effects outside mesh (it opens a ticket, spends a
    quota, posts a review): before each call mesh records durably that it
    started, and when a resumed run finds such a call started but never
    finished, the unit fails with ``requires_clarification`` and evidence
    naming the call, instead of calling it again. Integrators are taken as
    not safe to re-run unless they declare otherwise (`rerun_safe`).

    .. versionadded:: 0.1.0
    """
    return _declared(adapter, safe=False)


def _declared(adapter: AdapterT, *, safe: bool) -> AdapterT:
    try:
        adapter.rerun_safe = safe  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        kind = type(adapter).__name__
        raise InputError(
            f"cannot declare a {kind}'s re-run safety: set a `rerun_safe` class attribute instead"
        ) from None
    return adapter


def is_rerun_safe(lane: Lane, adapter: object) -> bool:
    """Whether an interrupted call of ``adapter`` playing ``lane`` may be made again."""
    declared = getattr(adapter, "rerun_safe", None)
    return declared if type(declared) is bool else lane in _RERUN_SAFE_BY_DEFAULT


def _is_async(adapter: object) -> bool:
    return inspect.iscoroutinefunction(adapter) or inspect.iscoroutinefunction(
        getattr(adapter, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


async def invoke(adapter: Adapter[Any], request: object) -> object:
    """Call an adapter: async ones in this task, sync ones in a worker thread."""
    return await BoundAdapter.of(adapter).invoke(request)


@attrs.frozen
class BoundAdapter:
    """An adapter with its kind looked up once: `invoke` without the per-call inspection."""

    adapter: Adapter[Any]
    is_async: bool

    @classmethod
    def of(cls, adapter: Adapter[Any]) -> BoundAdapter:
        """Inspect ``adapter`` once."""
        return cls(adapter, _is_async(adapter))

    async def invoke(self, request: object) -> object:
        """Call the adapter as `invoke` does."""
        if self.is_async:
            return await self.adapter(request)  # type: ignore[misc]
        # Counted for the manual test clock, which must not jump while a call works in a
        # thread; keyed by the loop's thread, so runs on other loops do not count here.
        loop_thread = threading.get_ident()
        _CALLS_IN_THREADS[loop_thread] += 1
        try:
            # Boxed so that trio does not refuse a sync callable that returns a coroutine.
            (result,) = await anyio.to_thread.run_sync(
                _boxed_call, self.adapter, request, abandon_on_cancel=True
            )
        finally:
            _CALLS_IN_THREADS[loop_thread] -= 1
        if inspect.isawaitable(result):
            return await result
        return result


_CALLS_IN_THREADS: Final[Counter[int]] = Counter()


def calls_in_threads() -> int:
    """How many sync adapter calls of this event loop's thread are running in worker threads."""
    return _CALLS_IN_THREADS[threading.get_ident()]


def _boxed_call(adapter: Adapter[Any], request: object) -> tuple[object]:
    return (adapter(request),)


def check_result(answer: object, *, unit: Unit, candidate_id: str, lane: Lane) -> WorkerResult:
    """
    Parse an adapter's answer and check it is about what was asked.

    Raises:
        InvalidOutputSchema: Listing every problem.
    """
    if take_checked(answer):
        result = answer
    elif isinstance(answer, WorkerResult):
        result = recheck_worker_result(answer)
        # Checked now, for this call only: the same object handed in again is checked again.
        take_checked(result)
    else:
        result = parse_worker_result(answer)
    if result.id == unit.id and result.candidate_id == candidate_id and result.lane is lane:
        return result
    problems = [
        f"$.{name}: expected {expected!r}, got {actual!r}"
        for name, expected, actual in (
            ("id", unit.id, result.id),
            ("candidate_id", candidate_id, result.candidate_id),
            ("lane", lane.value, result.lane.value),
        )
        if expected != actual
    ]
    raise InvalidOutputSchema(problems)


def check_selection(request: AdjudicationRequest, result: WorkerResult) -> None:
    """
    Refuse a fixer's answer selecting a candidate it was not shown as proven.

    The contract sees only the answer; which candidates may be selected is the
    request's to say.

    Raises:
        InvalidOutputSchema: Naming the selection and the candidates it was shown.
    """
    selected = result.selected_candidate
    if selected is None:
        return
    shown = [candidate.candidate_id for candidate, _ in request.proven]
    if selected not in shown:
        problem = f"$.selected_candidate: {selected!r} is not one of the proven candidates"
        raise InvalidOutputSchema([f"{problem} it was shown ({', '.join(shown)})"])


def result_document(
    unit: Unit,
    *,
    candidate_id: str,
    lane: Lane,
    decision: Decision | str,
    triplet_index: int = 1,
    **fields: object,
) -> dict[str, object]:
    """An answer under output contract v2, with the keys every lane needs filled from the unit."""
    document: dict[str, object] = {
        "id": unit.id,
        "candidate_id": candidate_id,
        "triplet_index": triplet_index,
        "lane": lane.value,
        "decision": decision.value if isinstance(decision, Decision) else decision,
        "proof_status": "not_applicable",
        "write_scope": list(unit.write_scope) or ["unknown"],
        "risk_tier": unit.risk_tier.value,
        "base_sha": unit.base_sha,
        "proof_attempts": 0,
        "proof_evidence": {"command": "", "key_line": "", "exit_code": 0},
    }
    document.update(fields)
    return {key: value for key, value in document.items() if value is not None}


def lease_result(
    request: LeaseRequest, decision: Decision, lease_id: str, reason: str
) -> dict[str, object]:
    """A locksmith answer under output contract v2."""
    return result_document(
        request.unit,
        candidate_id=request.candidate_id,
        lane=Lane.LOCKSMITH,
        decision=decision,
        write_scope=list(request.write_scope) or ["unknown"],
        proof_evidence={"command": "", "key_line": reason, "exit_code": 0},
        lease_id=lease_id,
        ttl_ms=request.ttl_ms,
        notes=reason,
    )


@attrs.define(eq=False, kw_only=True)
class _Lease:
    lease_id: str
    holder: str
    scope: tuple[str, ...]
    expires_at: float


def _lease_number(lease_id: str) -> int:
    return int(lease_id.removeprefix("lease-"))


class LeaseTable:
    """
    The default locksmith: an in-process lease table with TTL and reclaim.

    Two leases whose scopes overlap are never active at once, unless they have
    the same holder (the candidates of one unit share its lease). An expired
    lease is reclaimed before a conflicting request is judged; acquiring again
    as the same holder renews. Given the repository's ``tracked_files``, globs
    in scopes are judged by the files they match (see `scopes_overlap`).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, *, clock: Clock | None = None, tracked_files: Collection[str] | None = None
    ) -> None:
        self._clock = clock
        self.tracked_files = tracked_files
        self._leases: dict[str, _Lease] = {}
        self._by_holder: dict[str, dict[str, _Lease]] = {}
        self._index: ScopeIndex[str] = ScopeIndex()
        self._expiries: list[tuple[float, str]] = []
        """A heap of (expiry, lease id); renewals push again, stale entries are skipped."""
        self._ids: Final = itertools.count(1)

    def bind_clock(self, clock: Clock) -> None:
        """Use the run's clock (the orchestrator calls this)."""
        if self._clock is None:
            self._clock = clock

    def _now(self) -> float:
        return self._clock.current_time() if self._clock is not None else anyio.current_time()

    @property
    def active(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """``(holder, scope)`` of every unexpired lease."""
        now = self._now()
        return tuple(
            (lease.holder, lease.scope) for lease in self._leases.values() if lease.expires_at > now
        )

    def _drop(self, lease_id: str) -> _Lease | None:
        lease = self._leases.pop(lease_id, None)
        if lease is not None:
            self._index.discard(lease_id)
            held = self._by_holder[lease.holder]
            del held[lease_id]
            if not held:
                del self._by_holder[lease.holder]
        return lease

    def _reclaim_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, lease_id = heapq.heappop(self._expiries)
            lease = self._leases.get(lease_id)
            if lease is not None and lease.expires_at <= now:
                self._drop(lease_id)

    async def __call__(self, request: LeaseRequest) -> dict[str, object]:
        """Grant, deny or reclaim, as output contract v2 says."""
        return lease_result(request, *self._decide(request))

    async def answer(self, request: LeaseRequest) -> WorkerResult:
        """The same answer as a record built checked: what the engine calls on its own table."""
        decision, lease_id, reason = self._decide(request)
        return answers.lease(request, decision=decision, lease_id=lease_id, reason=reason)

    def _decide(self, request: LeaseRequest) -> tuple[Decision, str, str]:
        now = self._now()
        if request.action == "release":
            lease = self._drop(request.lease_id or "")
            reason = "released" if lease is not None else "already released or expired"
            return Decision.RECLAIM, request.lease_id or "none", reason
        self._reclaim_expired(now)
        expires = now + request.ttl_ms / 1000
        own = self._by_holder.get(request.holder, {})
        for lease in own.values():
            if lease.scope == request.write_scope:
                lease.expires_at = expires
                heapq.heappush(self._expiries, (expires, lease.lease_id))
                return Decision.GRANT, lease.lease_id, "renewed"
        # Oldest first, so the lease named in a denial does not depend on set order.
        for lease_id in sorted(self._index.candidates(request.write_scope), key=_lease_number):
            lease = self._leases[lease_id]
            if lease.holder == request.holder:
                continue
            if scopes_overlap(lease.scope, request.write_scope, tracked_files=self.tracked_files):
                reason = f"overlaps {lease.lease_id} held by {lease.holder}"
                return Decision.DENY, lease.lease_id, reason
        lease_id = f"lease-{next(self._ids)}"
        lease = _Lease(
            lease_id=lease_id, holder=request.holder, scope=request.write_scope, expires_at=expires
        )
        self._leases[lease_id] = lease
        self._by_holder.setdefault(request.holder, {})[lease_id] = lease
        self._index.add(lease_id, request.write_scope)
        heapq.heappush(self._expiries, (expires, lease_id))
        return Decision.GRANT, lease_id, "granted"
