"""
Protocols and type aliases for code that plugs into mesh.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from .contracts._clock import Clock
from .contracts._events import LedgerSink
from .contracts._records import BudgetDecision
from .engine._executors import Executor
from .engine._roles import (
    AdjudicationRequest,
    ApplyRequest,
    AuthorRequest,
    DeliveryRequest,
    LeaseRequest,
    ProofRequest,
)
from .git._workspaces import WorkspaceSource

__all__ = [
    "AnswerT",
    "ApplierAdapter",
    "BudgetProvider",
    "Clock",
    "CoderAdapter",
    "Executor",
    "FixerAdapter",
    "IntegratorAdapter",
    "LedgerSink",
    "LocksmithAdapter",
    "ProverAdapter",
    "RoleAdapter",
    "WorkspaceSource",
]

RequestT_contra = TypeVar("RequestT_contra", contravariant=True)
AnswerT = object
"""What an adapter returns: a contract-v2 JSON object, JSON text, or a `mesh.WorkerResult`."""


class RoleAdapter(Protocol[RequestT_contra]):
    """
    **Protocol:** a role adapter, a sync or async callable taking one request.

    Sync adapters run in a worker thread; async adapters run in the unit's task.
    """

    def __call__(self, request: RequestT_contra, /) -> AnswerT | Awaitable[AnswerT]:
        """Answer the request under output contract v2."""


CoderAdapter = RoleAdapter[AuthorRequest]
"""Coders and reducers."""
LocksmithAdapter = RoleAdapter[LeaseRequest]
ApplierAdapter = RoleAdapter[ApplyRequest]
ProverAdapter = RoleAdapter[ProofRequest]
FixerAdapter = RoleAdapter[AdjudicationRequest]
IntegratorAdapter = RoleAdapter[DeliveryRequest]
BudgetProvider = Callable[[], BudgetDecision | Awaitable[BudgetDecision]]
"""Returns the current budget decision; mesh calls it again during a run."""
