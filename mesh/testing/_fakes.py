"""Scripted fake role adapters and valid-answer builders."""

from __future__ import annotations

import collections
import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
import attrs

from ..contracts._enums import Decision, DeliveryMode, Lane
from ..contracts._events import LedgerEvent, MemorySink, capture_sinks
from ..contracts._records import Unit
from ..engine._roles import (
    AdjudicationRequest,
    ApplyRequest,
    AuthorRequest,
    DeliveryRequest,
    LeaseRequest,
    ProofRequest,
    Roles,
    lease_result,
    result_document,
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


def _base(unit: Unit, candidate_id: str, lane: Lane, triplet_index: int) -> dict[str, object]:
    return result_document(
        unit, candidate_id=candidate_id, lane=lane, decision="", triplet_index=triplet_index
    )


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

    .. versionadded:: 0.1.0
    """
    if isinstance(request, AuthorRequest):
        document = _base(request.unit, request.candidate_id, request.lane, request.triplet_index)
        document |= {"decision": "accept", "patch": _patch_for(request.unit, request.candidate_id)}
        if request.lane is Lane.REDUCER:
            document["reduce_record"] = {
                "target_abstraction": "the change",
                "replacement_primitive": "a smaller change",
                "complexity_delta": "-1",
                "invariants_preserved": [request.unit.invariants or "behaviour"],
                "rollback_plan": "revert the patch",
            }
    elif isinstance(request, LeaseRequest):
        decision = "grant" if request.action == "acquire" else "reclaim"
        document = lease_result(
            request, Decision(decision), request.lease_id or "lease-fake", "fake"
        )
    elif isinstance(request, ApplyRequest):
        document = _base(
            request.unit, request.candidate_id, Lane.APPLIER, request.candidate.triplet_index
        )
        document |= {"decision": "applied", "worktree_path": f"memory://{request.candidate_id}"}
    elif isinstance(request, ProofRequest):
        document = _base(
            request.unit, request.candidate_id, Lane.PROVER, request.candidate.triplet_index
        )
        command = request.unit.proof_command or "true"
        document |= {
            "decision": "pass",
            "proof_status": "pass",
            "proof_attempts": request.proof_attempt,
            "proof_evidence": {"command": command, "key_line": "passed", "exit_code": 0},
        }
    elif isinstance(request, AdjudicationRequest):
        document = _base(request.unit, request.candidate_id, Lane.FIXER, request.fixer_index)
        selected = request.proven[0][0].candidate_id if request.proven else None
        document |= {
            "decision": "accepted" if selected else "rework_required",
            "proof_status": "pass" if selected else "not_applicable",
            "selected_candidate": selected,
            "quorum_target": request.quorum_target,
            "quorum_observed": request.quorum_target,
        }
        if not selected:
            document["failure_code"] = "proof_missing"
    elif isinstance(request, DeliveryRequest):
        document = _base(
            request.unit, request.candidate_id, Lane.INTEGRATOR, request.candidate.triplet_index
        )
        commit = request.unit.delivery_mode is DeliveryMode.COMMIT_FIRST
        document |= {
            "decision": "integrated_commit" if commit else "integrated_patch",
            "proof_status": "pass",
            "artifact_ref": f"memory://{request.unit.id}/{request.candidate_id}.patch",
            "scope_assertion": "within write_scope",
        }
    else:
        raise TypeError(f"no fake answer for {type(request).__name__}")
    document.update(overrides)
    return {key: value for key, value in document.items() if value is not None}


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
    ) -> None:
        self.handler = handler or answer
        self.script = collections.deque(script)
        self.delay = delay
        self.clock = clock
        self.calls: list[Any] = []

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
