"""
Running a plan on a real repository with the built-in adapters (``mesh run``, ``mesh demo``).

`git_roles` wires worktrees, leases, the git applier, the command prover, a
fixer and the git integrator around the coders you bring. `run_in_repository`
opens the workspaces, runs the plan, and leaves the ledger, the plan state and
the patches in an output folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from ._adapters import CommandProver, GitApplier, GitIntegrator, MechanicalFixer
from ._enums import DeliveryMode
from ._events import CallbackSink, LedgerEvent, LedgerSink
from ._records import BudgetDecision, Plan, Unit
from ._roles import Adapter, AuthorRequest, LeaseTable, Roles
from ._scheduler import Orchestrator, RunResult
from ._workspaces import WorkspaceManager

__all__ = ["RepositoryRun", "git_roles", "run_in_repository"]


def git_roles(
    workspaces: WorkspaceManager,
    *,
    coder: Adapter[AuthorRequest],
    integrator: GitIntegrator,
    reducer: Adapter[AuthorRequest] | None = None,
    fixer: Adapter[Any] | None = None,
    proof_timeout: float = 600.0,
    tracked_files: Sequence[str] | None = None,
) -> Roles:
    """
    The built-in roles around your coders: leases, applier, prover, fixer, integrator.

    Args:
        workspaces: An open `WorkspaceManager` of the repository.
        coder: Writes candidates 1 and 2 (e.g. a `CommandCoder`).
        integrator: Delivers accepted candidates (a `GitIntegrator`).
        reducer: Writes candidate 3 (default: none, two candidates per unit).
        fixer: Adjudicates (default: `MechanicalFixer`, the smallest passing patch).
        proof_timeout: Seconds a proof command may run.
        tracked_files: The repository's files, so that lease globs are judged by them.

    .. versionadded:: 0.1.0
    """
    return Roles(
        coder=coder,
        reducer=reducer,
        locksmith=LeaseTable(tracked_files=tracked_files),
        applier=GitApplier(workspaces),
        prover=CommandProver(workspaces, timeout=proof_timeout),
        fixer=fixer or MechanicalFixer(),
        integrator=integrator,
    )


@attrs.frozen(kw_only=True)
class RepositoryRun:
    """
    A finished run on a repository, and where its files are.

    .. versionadded:: 0.1.0
    """

    result: RunResult
    out: Path
    ledger_path: Path
    plan_path: Path
    patches: Path
    workspaces_created: int
    workspaces_reused: int


async def run_in_repository(
    plan: Plan | Sequence[Unit] | object,
    *,
    repo: str | os.PathLike[str],
    out: str | os.PathLike[str],
    coder: Callable[[WorkspaceManager], Adapter[AuthorRequest]],
    reducer: Callable[[WorkspaceManager], Adapter[AuthorRequest]] | None = None,
    fixer: Adapter[Any] | None = None,
    budget: BudgetDecision | None = None,
    delivery_mode: DeliveryMode | None = None,
    default_proof_command: str | None = None,
    branch: str | None = None,
    proof_timeout: float = 600.0,
    call_timeout: float | None = 3600.0,
    on_event: Callable[[LedgerEvent], object] | None = None,
    pool_size: int = 4,
    run_id: str | None = None,
) -> RepositoryRun:
    """
    Run ``plan`` on ``repo`` with real worktrees, proofs and delivery.

    ``coder`` and ``reducer`` build the author adapters once the workspaces
    are open (e.g. ``lambda ws: CommandCoder(ws, "agent {objective}")``).
    The ledger goes to ``out/ledger.jsonl``, plan state to ``out/plan.json``
    (written by the integrator after each delivery), patches to ``out/patches``.

    .. versionadded:: 0.1.0
    """
    folder = Path(out)
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    ledger_path = folder / "ledger.jsonl"
    plan_path = folder / "plan.json"
    patches = folder / "patches"
    sinks: list[LedgerSink] = [CallbackSink(on_event)] if on_event is not None else []
    async with WorkspaceManager(repo, pool_size=pool_size) as workspaces:
        integrator = GitIntegrator(
            workspaces, artifacts=patches, plan_path=plan_path, branch=branch
        )
        roles = git_roles(
            workspaces,
            coder=coder(workspaces),
            reducer=reducer(workspaces) if reducer is not None else None,
            fixer=fixer,
            integrator=integrator,
            proof_timeout=proof_timeout,
            tracked_files=await workspaces.tracked_files(),
        )
        async with Orchestrator(
            roles=roles,
            budget=budget,
            call_timeout=call_timeout,
            sinks=sinks,
            ledger_path=ledger_path,
            run_id=run_id,
        ) as orchestrator:
            result = await orchestrator.execute(
                plan, delivery_mode=delivery_mode, default_proof_command=default_proof_command
            )
        created, reused = workspaces.created, workspaces.reused
    return RepositoryRun(
        result=result,
        out=folder,
        ledger_path=ledger_path,
        plan_path=plan_path,
        patches=patches,
        workspaces_created=created,
        workspaces_reused=reused,
    )
