"""
Protocols and type aliases for code that plugs into mesh.

Annotate your own role adapters, budget providers, clocks, ledger sinks and
executors with these. Nothing needs to subclass them: they are matched
structurally, by the methods and call signature an object has.

- `RoleAdapter`: any role adapter, generic in its request type;
  `CoderAdapter`, `LocksmithAdapter`, `ApplierAdapter`, `ProverAdapter`,
  `FixerAdapter` and `IntegratorAdapter` fix the request for each role.
- `AnswerT`: what an adapter may return.
- `BudgetProvider`: a callable that returns the current `mesh.BudgetDecision`.
- `Clock`, `LedgerSink`, `Executor`: the protocols of `mesh.Clock`,
  `mesh.LedgerSink` and `mesh.Executor`, here too.
- `WorkspaceSource`: what mesh's git adapters take as their workspaces.
- `EngineOptions`, `MemoryOptions`, `RepositoryOptions`, `ResumeOptions`: the
  keyword options of `mesh.run`, `mesh.run_async`, `mesh.resume` and
  `mesh.resume_async`, as typed dicts (``**options: Unpack[...]``); `Backend`.

    >>> import mesh, mesh.testing, mesh.typing
    >>> def coder(request: mesh.AuthorRequest) -> mesh.typing.AnswerT:
    ...     return mesh.testing.answer(request)
    >>> adapter: mesh.typing.CoderAdapter = coder  # what a type checker verifies
    >>> roles = mesh.testing.fake_roles(coder=adapter)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

# Through `mesh`, so that the protocols it also publishes report `mesh` as their home.
from . import Clock, Executor, LedgerSink
from .contracts._records import BudgetDecision
from .engine._roles import (
    AdjudicationRequest,
    ApplyRequest,
    AuthorRequest,
    DeliveryRequest,
    LeaseRequest,
    ProofRequest,
)
from .git._workspaces import WorkspaceSource
from .store._front import (
    Backend,
    EngineOptions,
    MemoryOptions,
    RepositoryOptions,
    ResumeOptions,
)

__all__ = [
    "AnswerT",
    "ApplierAdapter",
    "Backend",
    "BudgetProvider",
    "Clock",
    "CoderAdapter",
    "EngineOptions",
    "Executor",
    "FixerAdapter",
    "IntegratorAdapter",
    "LedgerSink",
    "LocksmithAdapter",
    "MemoryOptions",
    "ProverAdapter",
    "RepositoryOptions",
    "ResumeOptions",
    "RoleAdapter",
    "WorkspaceSource",
]

# The run options are defined beside the front door, which reads their keys; they are
# published here. Their annotations are read where they were written first, so that
# `typing.get_type_hints` keeps working once they report `mesh.typing`.
for _options in (EngineOptions, MemoryOptions, RepositoryOptions, ResumeOptions):
    _options.__annotations__ = inspect.get_annotations(_options, eval_str=True)
    _options.__module__ = __name__

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
"""A coder or a reducer: writes one candidate for a `mesh.AuthorRequest`."""
LocksmithAdapter = RoleAdapter[LeaseRequest]
"""A locksmith: grants, denies or reclaims a write-scope lease (`mesh.LeaseRequest`)."""
ApplierAdapter = RoleAdapter[ApplyRequest]
"""An applier: applies one candidate in its own worktree (`mesh.ApplyRequest`)."""
ProverAdapter = RoleAdapter[ProofRequest]
"""A prover: runs the unit's proof where the candidate was applied (`mesh.ProofRequest`)."""
FixerAdapter = RoleAdapter[AdjudicationRequest]
"""A fixer: judges the proven candidates (`mesh.AdjudicationRequest`)."""
IntegratorAdapter = RoleAdapter[DeliveryRequest]
"""The integrator: delivers the accepted candidate (`mesh.DeliveryRequest`)."""
BudgetProvider = Callable[[], BudgetDecision | Awaitable[BudgetDecision]]
"""Returns the current budget decision (sync or async); mesh calls it again during a run."""
