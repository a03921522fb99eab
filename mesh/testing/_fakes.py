"""Scripted fake role adapters and valid-answer builders."""

from __future__ import annotations

import collections
import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
import attrs

from .. import answers
from ..contracts._contract import checked_result_document
from ..contracts._enums import Decision, FailureCode, Lane
from ..contracts._events import LedgerEvent, MemorySink, capture_sinks
from ..contracts._records import Unit, WorkerResult
from ..engine._mistakes import adapter_name
from ..engine._roles import (
    AdjudicationRequest,
    ApplyRequest,
    AuthorRequest,
    DeliveryRequest,
    LeaseRequest,
    ProofRequest,
    Roles,
)
from ._clock import ManualClock

__all__ = ["FakeAdapter", "Hang", "Raise", "Sleep", "answer", "capture_ledger", "fake_roles"]


@attrs.frozen
class Raise:
    """Script step: raise this exception (an aborted turn)."""

    exception: BaseException


@attrs.frozen
class Hang:
    """Script step: never answer (the call times out)."""


@attrs.frozen
class Sleep:
    """Script step: wait this long, then answer with the handler."""

    seconds: float


def _patch_for(unit: Unit, candidate_id: str) -> str:
    path = next((root for root in unit.write_scope if "*" not in root), "change.txt")
    path = path if path != "unknown" else "change.txt"
    return f"--- a/{path}\n+++ b/{path}\n@@ -0,0 +1 @@\n+{unit.objective} ({candidate_id})\n"


def answer(request: object, **overrides: object) -> dict[str, object]:
    """
    A valid output-contract-v2 answer to ``request``, with ``overrides`` applied.

    Authors accept with a small patch (reducers add a reduce record); the
    applier applies; the prover passes on the requested attempt; fixers accept
    the first proven candidate; the integrator delivers as the unit's delivery
    mode says. ``answer(request, decision="reject")`` and the like script the rest.
    The answer is built with `mesh.answers` and written out as its document,
    so overrides can break it on purpose; an adapter of your own returns what
    `mesh.answers` builds instead.

    .. versionadded:: 0.1.0
    """
    document = checked_result_document(_happy_path(request))
    document.update(overrides)
    return {key: value for key, value in document.items() if value is not None}


def _happy_path(request: object) -> WorkerResult:  # noqa: PLR0911 - one per kind of request
    """`answer` before its overrides: the happy-path record, built checked."""
    if isinstance(request, AuthorRequest):
        patch = _patch_for(request.unit, request.candidate_id)
        if request.lane is not Lane.REDUCER:
            return answers.candidate(request, patch=patch)
        return answers.reduction(
            request,
            patch=patch,
            target_abstraction="the change",
            replacement_primitive="a smaller change",
            complexity_delta="-1",
            invariants_preserved=[request.unit.invariants or "behaviour"],
            rollback_plan="revert the patch",
        )
    if isinstance(request, LeaseRequest):
        decision: answers.LeaseDecision = (
            Decision.GRANT if request.action == "acquire" else Decision.RECLAIM
        )
        lease_id = request.lease_id or "lease-fake"
        return answers.lease(request, decision=decision, lease_id=lease_id, reason="fake")
    if isinstance(request, ApplyRequest):
        return answers.applied(request, worktree_path=f"memory://{request.candidate_id}")
    if isinstance(request, ProofRequest):
        command = request.unit.proof_command or "true"
        return answers.proof(request, passed=True, evidence="passed", command=command)
    if isinstance(request, AdjudicationRequest):
        if request.proven:
            return answers.verdict(request, select=request.proven[0][0].candidate_id)
        return answers.rework(
            request,
            reason="no candidate passed its proof",
            failure_code=FailureCode.PROOF_MISSING,
        )
    if isinstance(request, DeliveryRequest):
        return answers.delivered(
            request,
            artifact_ref=f"memory://{request.unit.id}/{request.candidate_id}.patch",
            scope_assertion="within write_scope",
        )
    raise TypeError(f"no fake answer for {type(request).__name__}")


class FakeAdapter:
    """
    A role adapter for tests: answers from a script first, then from a handler.

    Args:
        handler: Called with the request when the script is used up; sync or
            async. Default: `answer`, a valid happy-path answer.
        script: Steps used one per call: an answer to return (a dict, JSON
            text or a `mesh.WorkerResult`), a callable taking the request,
            `Raise`, `Hang` or `Sleep`.
        delay: Seconds to wait before every answer.
        clock: Clock for delays (a `ManualClock` in tests); default the event loop.
        rerun_safe: Whether a resumed run may call it again for a request a
            crash interrupted (see `mesh.not_rerun_safe`); a fake has no
            effects outside the test, so it is, unless a test says otherwise.

    ``calls`` lists every request received, in order.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        handler: Callable[[Any], object] | None = None,
        *,
        script: Iterable[object] = (),
        delay: float = 0.0,
        clock: ManualClock | None = None,
        rerun_safe: bool = True,
    ) -> None:
        self.rerun_safe = rerun_safe
        self.handler = handler or answer
        self.script = collections.deque(script)
        self.delay = delay
        self.clock = clock
        self.calls: list[Any] = []

    def __repr__(self) -> str:
        left = len(self.script)
        script = f", {left} scripted {'step' if left == 1 else 'steps'} left" if left else ""
        return f"FakeAdapter(handler={adapter_name(self.handler)}{script})"

    async def _sleep(self, seconds: float) -> None:
        if self.clock is not None:
            await self.clock.sleep(seconds)
        else:
            await anyio.sleep(seconds)

    async def __call__(self, request: Any) -> object:  # noqa: ANN401 - any request record
        """Answer one request."""
        self.calls.append(request)
        step = self.script.popleft() if self.script else None
        if self.delay:
            await self._sleep(self.delay)
        if isinstance(step, Raise):
            raise step.exception
        if isinstance(step, Hang):
            await anyio.sleep_forever()
        if isinstance(step, Sleep):
            await self._sleep(step.seconds)
            step = None
        if step is not None:
            return step(request) if callable(step) else step
        result = self.handler(request)
        return await result if inspect.isawaitable(result) else result


def fake_roles(**overrides: object) -> Roles:
    """
    A complete happy-path `mesh.Roles` of `FakeAdapter`s; pass any role to replace it.

    >>> failing = FakeAdapter(lambda r: answer(r, decision="fail", proof_status="fail"))
    >>> roles = fake_roles(prover=failing)

    .. versionadded:: 0.1.0
    """
    defaults: dict[str, object] = {
        "coder": FakeAdapter(),
        "reducer": FakeAdapter(),
        "applier": FakeAdapter(),
        "prover": FakeAdapter(),
        "fixer": FakeAdapter(),
        "integrator": FakeAdapter(),
    }
    return Roles(**(defaults | overrides))  # type: ignore[arg-type]


@contextlib.contextmanager
def capture_ledger() -> Iterator[list[LedgerEvent]]:
    """
    Collect the ledger events of every run started inside the block.

    .. versionadded:: 0.1.0
    """
    sink = MemorySink()
    with capture_sinks(sink):
        yield sink.events
