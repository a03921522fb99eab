"""
Running a plan on a real repository with the built-in adapters (``mesh run``, ``mesh demo``).

`git_roles` wires worktrees, leases, the git applier, the command prover, a
fixer and the git integrator around the coders you bring. `run_in_repository`
opens the workspaces, runs the plan, and leaves the ledger, the plan state and
the patches in an output folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import attrs

from ..contracts._enums import DeliveryMode
from ..contracts._errors import InputError
from ..contracts._events import CallbackSink, LedgerEvent, LedgerSink, ledger_text
from ..contracts._files import atomic_write_text
from ..contracts._records import BudgetDecision, Plan, Unit
from ..contracts._text import one_line, text_problem
from ..engine._executors import Executor, LocalExecutor
from ..engine._plan_state import plan_units as _plan_units
from ..engine._results import ResumePoint, RunResult
from ..engine._resume import resume_point
from ..engine._roles import Adapter, AuthorRequest, DeliveryRequest, LeaseTable, Roles
from ..engine._scheduler import Orchestrator, checked_estimates
from ..git._adapters import CommandProver, GitApplier, MechanicalFixer
from ..git._integrator import GitIntegrator
from ..git._target import TargetState, open_target
from ..git._workspaces import WorkspaceManager, WorkspaceSource, repository_top
from ..host._owner import owning
from ..host._sandbox import Sandbox
from ._store import STORE_FILE, RunStore, StoreError

__all__ = ["RepositoryRun", "git_roles", "resume_in_repository", "run_in_repository"]


def git_roles(
    workspaces: WorkspaceManager,
    *,
    coder: Adapter[AuthorRequest],
    integrator: GitIntegrator,
    reducer: Adapter[AuthorRequest] | None = None,
    fixer: Adapter[Any] | None = None,
    proof_timeout: float = 600.0,
    tracked_files: Sequence[str] | None = None,
    portable: bool = False,
    sandbox: Sandbox | None = None,
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
        portable: Give the applier and prover the repository's path instead of
            the open manager: they can then be pickled and run on other
            machines (`RayExecutor`), making their worktrees where they run.
        sandbox: Run proofs in this bubblewrap sandbox (`mesh.Sandbox`).

    .. versionadded:: 0.1.0
    """
    source: WorkspaceSource = str(workspaces.repo) if portable else workspaces
    return Roles(
        coder=coder,
        reducer=reducer,
        locksmith=LeaseTable(tracked_files=tracked_files),
        applier=GitApplier(source),
        prover=CommandProver(source, timeout=proof_timeout, sandbox=sandbox),
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
    store_path: Path
    workspaces_created: int
    workspaces_reused: int


def _plan_document(plan: Plan | Sequence[Unit] | object) -> object:
    """The plan as JSON values, to keep in the run store for a resume."""
    if isinstance(plan, Plan):
        steps = [
            {key: value for key, value in attrs.asdict(step).items() if value is not None}
            for step in plan.steps
        ]
        return {"plan": steps} | ({"explanation": plan.explanation} if plan.explanation else {})
    if isinstance(plan, list | tuple) and plan and all(isinstance(u, Unit) for u in plan):
        return {"units": [unit.to_document() for unit in plan]}
    return plan


async def run_in_repository(
    plan: Plan | Sequence[Unit] | object,
    *,
    repo: str | os.PathLike[str],
    out: str | os.PathLike[str],
    coder: Callable[[WorkspaceSource], Adapter[AuthorRequest]],
    reducer: Callable[[WorkspaceSource], Adapter[AuthorRequest]] | None = None,
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
    extra_config: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
    sandbox: Sandbox | None = None,
    estimates: Mapping[str, float] | None = None,
) -> RepositoryRun:
    """
    Run ``plan`` on ``repo`` with real worktrees, proofs and delivery, durably.

    ``coder`` and ``reducer`` build the author adapters once the workspaces
    are open (e.g. ``lambda ws: CommandCoder(ws, "agent {objective}")``).
    Every event goes to the run store ``out/run.sqlite`` (see `RunStore`), so
    that `resume_in_repository` can continue the run after a crash; the
    ledger also goes to ``out/ledger.jsonl``, plan state to ``out/plan.json``
    (written by the integrator after each delivery), patches to ``out/patches``.
    ``extra_config`` is kept in the store for whoever resumes the run.

    With an ``executor`` that runs calls elsewhere (`RayExecutor`), ``coder``
    and ``reducer`` get the repository's path instead of the open manager, and
    the applier and prover make their worktrees where they run; the
    integrator and the leases stay here.

    With a ``sandbox`` (`mesh.Sandbox`), proofs run in bubblewrap; pass the
    same sandbox to your `CommandCoder` for the coders.

    ``estimates`` (seconds by unit id, as `Orchestrator` takes them; for
    instance a past run's `unit_durations`) order the start of ready units, and
    are kept in the store for a resume.

    .. versionadded:: 0.1.0
    """
    # Read and check the plan before anything (folder, store, ledger, workspaces) exists.
    _plan_units(plan)
    checked_estimates(estimates)
    identifier = run_id or uuid.uuid4().hex[:12]
    if problem := text_problem(identifier):
        raise InputError(f"run_id {one_line(identifier)!r} {problem}")
    await repository_top(repo)  # a missing folder or repository, before anything is made
    top = await anyio.Path(repo).resolve()
    folder = Path(out)
    # One process at a time: a second run into this folder is refused before any work.
    with owning(folder) as ownership:
        await ownership.settle()
        # The target as the run found it: what every delivery, resumed ones too, is checked against.
        target = await open_target(Path(top), own_outputs=[folder])
        baseline = await target.snapshot(branch)
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        config = {
            "plan": _plan_document(plan),
            "repo": str(top),
            "delivery_mode": delivery_mode.value if delivery_mode else None,
            "default_proof_command": default_proof_command,
            "branch": branch,
            "proof_timeout": proof_timeout,
            "call_timeout": call_timeout,
            "pool_size": pool_size,
            "target": baseline.to_document(),
            **({"estimates": dict(estimates)} if estimates else {}),
            **(extra_config or {}),
        }
        store = RunStore.create(folder / STORE_FILE, run_id=identifier, config=config)
        ownership.hold_store(store.path)
        with store:
            return await _execute(
                plan,
                store=store,
                folder=folder,
                coder=coder,
                reducer=reducer,
                fixer=fixer,
                budget=budget,
                on_event=on_event,
                resume=None,
                executor=executor,
                sandbox=sandbox,
            )


async def resume_in_repository(
    out: str | os.PathLike[str],
    *,
    coder: Callable[[WorkspaceSource], Adapter[AuthorRequest]],
    reducer: Callable[[WorkspaceSource], Adapter[AuthorRequest]] | None = None,
    fixer: Adapter[Any] | None = None,
    budget: BudgetDecision | None = None,
    on_event: Callable[[LedgerEvent], object] | None = None,
    executor: Executor | None = None,
    sandbox: Sandbox | None = None,
) -> RepositoryRun:
    """
    Continue a run of `run_in_repository` that stopped (a crash, a kill, a reboot).

    The run's store is read back: completed and failed units keep their
    outcome; units that were in flight restart at their recorded attempt,
    proving their recorded candidates again or writing new ones. Worktrees of
    the dead process are removed, an interrupted ``git am`` is aborted, and a
    unit whose delivery had started is checked against the repository first,
    so that nothing is integrated twice. Pass the same adapters as the first
    time (they cannot be stored); the executor may differ.

    .. versionadded:: 0.1.0
    """
    given = Path(out)
    path = given / STORE_FILE if await anyio.Path(given).is_dir() else given
    if not await anyio.Path(path).is_file():
        raise StoreError(f"{path}: no run store there")
    with owning(path.parent) as ownership:
        ownership.hold_store(path)
        # What dead owners left running (a git command, a proof) ends before anything else.
        await ownership.settle()
        return await _resume(
            path,
            coder=coder,
            reducer=reducer,
            fixer=fixer,
            budget=budget,
            on_event=on_event,
            executor=executor,
            sandbox=sandbox,
        )


async def _resume(
    path: Path,
    *,
    coder: Callable[[WorkspaceSource], Adapter[AuthorRequest]],
    reducer: Callable[[WorkspaceSource], Adapter[AuthorRequest]] | None,
    fixer: Adapter[Any] | None,
    budget: BudgetDecision | None,
    on_event: Callable[[LedgerEvent], object] | None,
    executor: Executor | None,
    sandbox: Sandbox | None,
) -> RepositoryRun:
    store = RunStore.open(path)
    with store:
        _check_config(store)
        point = resume_point(store.events())
        # The store is the record: the JSON-lines copy may run ahead of it (batched
        # commits) or end in half a line, so it is rewritten from the store.
        await anyio.to_thread.run_sync(
            _rewrite_ledger, store.path.parent / "ledger.jsonl", point.history
        )
        return await _execute(
            store.config["plan"],
            store=store,
            folder=store.path.parent,
            coder=coder,
            reducer=reducer,
            fixer=fixer,
            budget=budget,
            on_event=on_event,
            resume=point,
            executor=executor,
            sandbox=sandbox,
        )


# What a resume reads from the configuration `run_in_repository` stored, and its types.
_STORED: Final[Mapping[str, tuple[type, ...]]] = {
    "repo": (str,),
    "pool_size": (int,),
    "proof_timeout": (int, float),
    "call_timeout": (int, float, type(None)),
}


def stored_plan(config: Mapping[str, Any], path: Path) -> tuple[Unit, ...]:
    """The units of the plan a store at ``path`` keeps; missing or unreadable, it is damage."""
    if "plan" not in config:
        raise StoreError(f"{path} is damaged: its configuration has no plan")
    try:
        return _plan_units(config["plan"])[0]
    except InputError as exc:
        raise StoreError(f"{path} is damaged: its plan: {exc}") from None


def _check_config(store: RunStore) -> None:
    """A resume's configuration, whole: a store damaged there is said before any work."""
    stored_plan(store.config, store.path)
    for key, kinds in _STORED.items():
        value = store.config.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise StoreError(f"{store.path} is damaged: its configuration's {key!r} is unreadable")
    try:
        checked_estimates(store.config.get("estimates"))
    except InputError:
        raise StoreError(
            f"{store.path} is damaged: its configuration's 'estimates' is unreadable"
        ) from None


def _deliveries(history: Sequence[LedgerEvent]) -> tuple[list[str], dict[str, str]]:
    """From a stopped run's events: the commits it delivered, and the deliveries under way."""
    delivered: list[str] = []
    started: dict[str, str] = {}
    for event in history:
        if event.event == "delivery_started" and event.unit_id is not None:
            started[event.unit_id] = str(event.data.get("idempotency_key", ""))
        elif event.event == "unit_finished" and event.unit_id is not None:
            started.pop(event.unit_id, None)
            reference = event.data.get("artifact_ref")
            if event.data.get("delivery") == "integrated_commit" and isinstance(reference, str):
                delivered.append(reference)
    return delivered, started


def _pending_requests(
    plan: object, resume: ResumePoint, started: Mapping[str, str]
) -> dict[str, DeliveryRequest]:
    """
    The deliveries under way when the run stopped, as the resumed run will ask for them.

    The integrator takes a commit the dead process left only if it is exactly
    what one of these makes; a unit whose record is incomplete has none, and a
    commit claiming it stays foreign.
    """
    units = {unit.id: unit for unit in _plan_units(plan)[0]}
    requests = {}
    for unit_id, key in started.items():
        checkpoint = resume.checkpoints.get(unit_id)
        if checkpoint is None or checkpoint.accepted is None or unit_id not in units:
            continue
        accepted = checkpoint.accepted
        proof = checkpoint.proofs.get(accepted)
        candidate = next((c for c in checkpoint.candidates if c.candidate_id == accepted), None)
        if proof is None or candidate is None:
            continue
        requests[key] = DeliveryRequest(
            unit=units[unit_id],
            candidate_id=accepted,
            candidate=candidate,
            proof=proof,
            approvals=checkpoint.approvals,
            plan_state={},
            attempt=checkpoint.attempt,
            idempotency_key=key,
        )
    return requests


def _rewrite_ledger(path: Path, events: Sequence[LedgerEvent]) -> None:
    atomic_write_text(path, ledger_text(events), what="ledger")


async def _execute(
    plan: object,
    *,
    store: RunStore,
    folder: Path,
    coder: Callable[[WorkspaceSource], Adapter[AuthorRequest]],
    reducer: Callable[[WorkspaceSource], Adapter[AuthorRequest]] | None,
    fixer: Adapter[Any] | None,
    budget: BudgetDecision | None,
    on_event: Callable[[LedgerEvent], object] | None,
    resume: ResumePoint | None,
    executor: Executor | None,
    sandbox: Sandbox | None,
) -> RepositoryRun:
    config = store.config
    ledger_path = folder / "ledger.jsonl"
    plan_path = folder / "plan.json"
    patches = folder / "patches"
    sinks: list[LedgerSink] = [store]
    if on_event is not None:
        sinks.append(CallbackSink(on_event))
    mode = config.get("delivery_mode")
    async with WorkspaceManager(config["repo"], pool_size=config["pool_size"]) as workspaces:
        integrator = GitIntegrator(
            workspaces, artifacts=patches, plan_path=plan_path, branch=config.get("branch")
        )
        if resume is None:
            await integrator.prepare()
        elif "target" in config:
            delivered, started = _deliveries(resume.history)
            await integrator.recover(
                TargetState.from_document(config["target"]),
                delivered=delivered,
                pending=_pending_requests(plan, resume, started),
            )
        else:  # a run stored before mesh kept the target's state: take it as it is
            await integrator.recover(
                pending=_pending_requests(plan, resume, _deliveries(resume.history)[1])
            )
        portable = executor is not None and not isinstance(executor, LocalExecutor)
        source: WorkspaceSource = str(workspaces.repo) if portable else workspaces
        roles = git_roles(
            workspaces,
            coder=coder(source),
            reducer=reducer(source) if reducer is not None else None,
            fixer=fixer,
            integrator=integrator,
            proof_timeout=config["proof_timeout"],
            tracked_files=await workspaces.tracked_files(),
            portable=portable,
            sandbox=sandbox,
        )
        async with Orchestrator(
            roles=roles,
            budget=budget,
            call_timeout=config["call_timeout"],
            sinks=sinks,
            ledger_path=ledger_path,
            run_id=store.run_id,
            executor=executor,
            estimates=config.get("estimates"),
        ) as orchestrator:
            result = await orchestrator.execute(
                plan,
                delivery_mode=DeliveryMode(mode) if mode else None,
                default_proof_command=config.get("default_proof_command"),
                resume=resume,
            )
        created, reused = workspaces.created, workspaces.reused
    return RepositoryRun(
        result=result,
        out=folder,
        ledger_path=ledger_path,
        plan_path=plan_path,
        patches=patches,
        store_path=store.path,
        workspaces_created=created,
        workspaces_reused=reused,
    )
