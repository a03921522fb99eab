"""
Executors: where role adapter calls run.

The engine (scheduling, leases, parsing, the lifecycle and the ledger) always
runs in the caller's process. An executor decides where each adapter call runs:
`LocalExecutor` runs them in this process (async adapters in the unit's task,
sync ones in a worker thread); `mesh.RayExecutor` sends them to a Ray cluster.
Whatever the executor, the engine applies the same timeouts, retries,
replacement, cancellation and ledger events around each call.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol, final, runtime_checkable

import attrs

from ..contracts._enums import Lane
from ..contracts._errors import InputError
from ._roles import Adapter, BoundAdapter

__all__ = ["Executor", "ExecutorInfo", "LocalExecutor", "Placed", "executor_slots"]

BoundCall = Callable[[object], Awaitable[object]]
"""An adapter bound to an executor: awaits one request's answer."""


@attrs.frozen(kw_only=True)
class ExecutorInfo:
    """
    What an executor offers a run, as `Executor.start` reports it.

    ``base_slots`` is one worker instance's worth of concurrent calls;
    ``max_slots`` is what scale-out may use. The budget's scale-out gate picks
    between them (see `executor_slots`). ``None`` means unbounded: the engine
    does not gate that executor's calls.

    .. versionadded:: 0.1.0
    """

    name: str
    """``local``, ``ray``, or a custom executor's name."""
    remote_lanes: frozenset[Lane] = frozenset()
    """The lanes whose calls run on the executor's workers and take its slots."""
    base_slots: int | None = None
    max_slots: int | None = None
    detail: Mapping[str, object] = attrs.field(factory=dict, hash=False)
    """JSON values recorded in the ``executor_started`` ledger event (address, nodes…)."""


@attrs.frozen
class Placed:
    """
    An answer and where it was computed.

    A bound call may return one instead of the bare answer; the engine records
    ``where`` in the call's ``adapter_call`` event.

    .. versionadded:: 0.1.0
    """

    answer: object
    where: str


@runtime_checkable
class Executor(Protocol):
    """
    **Protocol:** where a run's adapter calls run.

    The orchestrator calls `start` once per `Orchestrator.execute`, then `bind`
    once per adapter (raising there, before any unit starts, if an adapter
    cannot run on this executor), awaits the bound calls, and calls `stop` at
    the end, even when the run failed or was cancelled. A bound call must be
    cancellable: when the engine's timeout fires, the call is cancelled and must
    not keep running anywhere once it returns.

    .. versionadded:: 0.1.0
    """

    async def start(self) -> ExecutorInfo:
        """Connect (to a cluster, a pool) and say what the run may use."""

    def bind(self, lane: Lane, adapter: Adapter[Any]) -> BoundCall:
        """The async callable through which the engine calls ``adapter`` for ``lane``."""

    async def stop(self) -> None:
        """Give back what `start` took."""


@final
class LocalExecutor:
    """
    Runs every adapter call in this process: the default executor.

    Async adapters run in the unit's task; sync ones in a worker thread, so a
    blocking adapter never stalls the scheduler.

    .. versionadded:: 0.1.0
    """

    async def start(self) -> ExecutorInfo:
        """Nothing to connect to; calls are not gated."""
        return ExecutorInfo(name="local")

    def bind(self, lane: Lane, adapter: Adapter[Any]) -> BoundCall:  # noqa: ARG002 - every lane runs here
        """The adapter, inspected once: an async one is called as it is."""
        bound = BoundAdapter.of(adapter)
        return typing.cast("BoundCall", adapter) if bound.is_async else bound.invoke

    async def stop(self) -> None:
        """Nothing to give back."""


def executor_slots(
    *, base_slots: int, max_slots: int, scaleout_allowed: bool, saturated: bool
) -> int:
    """
    The scale-out gate: how many executor slots a run may use now.

    One instance's worth (``base_slots``) unless the calls are saturating it
    and the budget allows scale-out (``BudgetDecision.cas_scaleout_allowed``):
    then every slot the executor has.

    >>> executor_slots(base_slots=2, max_slots=8, scaleout_allowed=True, saturated=True)
    8
    >>> executor_slots(base_slots=2, max_slots=8, scaleout_allowed=False, saturated=True)
    2

    .. versionadded:: 0.1.0
    """
    base = max(1, min(base_slots, max_slots))
    return max(base, max_slots) if scaleout_allowed and saturated else base


def remote_lane_set(lanes: Collection[Lane | str]) -> frozenset[Lane]:
    """Lanes from names or members, rejecting unknown names with the valid ones listed."""
    chosen: set[Lane] = set()
    for lane in lanes:
        try:
            chosen.add(Lane(lane))
        except ValueError:
            valid = ", ".join(member.value for member in Lane)
            raise InputError(f"unknown lane {lane!r}: expected one of {valid}") from None
    return frozenset(chosen)
