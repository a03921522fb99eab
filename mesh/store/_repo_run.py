"""
Running a plan on a real repository with the built-in adapters (``mesh run``, ``mesh demo``).

`git_roles` wires worktrees, leases, the git applier, the command prover, a
fixer and the git integrator around the coders you bring.
`start_repository_run` (``mesh.run(plan, repo=..., out=...)``) opens the
workspaces, plays every role the caller left unset with those, runs the plan
and leaves the run store, the ledger, the plan state and the patches in the
output folder; `resume_repository_run` continues it after a stop.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import attrs

from ..agents._cli import AgentCoder, AgentFixer
from ..agents._pydantic_ai import PydanticAICoder
from ..contracts._enums import DeliveryMode, Lane
from ..contracts._errors import AdapterMistake, InputError, MeshError, ValidationError
from ..contracts._events import CallbackSink, LedgerEvent, LedgerSink, ledger_text
from ..contracts._files import atomic_write_text
from ..contracts._records import Unit
from ..contracts._text import one_line, text_problem
from ..engine._executors import Executor, LocalExecutor
from ..engine._plan_state import plan_document
from ..engine._plan_state import plan_units as _plan_units
from ..engine._results import ResumePoint, RunResult
from ..engine._resume import stored_point
from ..engine._retry import DEFAULT_RETRY, RetryPolicy, checked_retry
from ..engine._roles import (
    Adapter,
    AuthorRequest,
    DeliveryRequest,
    LeaseTable,
    Roles,
    preflight_problems,
)
from ..engine._scheduler import Orchestrator, checked_estimates
from ..git._adapters import CommandProver, GitApplier, MechanicalFixer
from ..git._coders import CallableCoder, CommandCoder, ScriptedCoder
from ..git._integrator import GitIntegrator
from ..git._target import TargetState, open_target
from ..git._workspaces import WorkspaceManager, WorkspaceSource, repository_top
from ..host._owner import owning
from ..host._sandbox import Sandbox
from ._store import STORE_FILE, RunStore, StoreError

__all__ = [
    "STORED_OPTIONS",
    "RepositoryRun",
    "git_roles",
    "resume_repository_run",
    "start_repository_run",
]

AdapterT = TypeVar("AdapterT")
# The built-in adapters that work in the repository's workspaces (given its path).
_WORKSPACE_ADAPTERS: Final = (
    CommandCoder,
    CallableCoder,
    ScriptedCoder,
    AgentCoder,
    AgentFixer,
    PydanticAICoder,
    GitApplier,
    CommandProver,
)


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


def role_kinds(roles: Roles) -> dict[str, str]:
    """
    Who plays each role, by the adapter's kind (``builtin`` where mesh plays it).

    Kinds are names (a module and a qualified name): they tell a class from
    another, not one lambda or one configuration of a class from another.
    """
    return {
        name: _kind(adapter)
        if adapter is not None
        else "none"
        if name == Lane.REDUCER.value
        else "builtin"
        for name, adapter in roles.named()
    }


def _same_kind(was: str, now: str) -> bool:
    """Whether two kinds name one adapter (a script's ``__main__`` is its module's name too)."""
    if was == now:
        return True
    was_module, _, was_name = was.rpartition(":")
    now_module, _, now_name = now.rpartition(":")
    return was_name == now_name and "__main__" in {was_module, now_module}


def _kind(adapter: object) -> str:
    while isinstance(adapter, functools.partial):
        adapter = adapter.func
    named = adapter if callable(adapter) and hasattr(adapter, "__qualname__") else type(adapter)
    module = getattr(named, "__module__", None) or "?"
    # mesh's own classes report `mesh` once re-exported, their private module before:
    # one name either way, so a resume in another process compares like with like.
    if module.startswith("mesh."):
        module = "mesh"
    return f"{module}:{getattr(named, '__qualname__', type(named).__qualname__)}"


def _checked_roles(roles: object, top: Path, stored: object, path: Path | None) -> Roles:
    """``roles``, checked to be usable on the repository ``top`` (and as first given, on resume)."""
    if not isinstance(roles, Roles):
        raise ValidationError("roles", [f"roles: expected mesh.Roles, got {type(roles).__name__}"])
    problems = roles.problems(required=(Lane.CODER,))
    problems.extend(
        problem
        for name, adapter in roles.named()
        if (problem := _source_problem(name, adapter, top))
    )
    if isinstance(roles.integrator, GitIntegrator):
        problems.append(
            "roles.integrator: leave it unset on a repository: the run delivers with its own "
            "GitIntegrator, kept in step with the run store"
        )
    if isinstance(stored, dict):
        now = role_kinds(roles)
        problems.extend(
            f"roles.{name}: the run was started with {was}, not {now.get(name, 'none')}"
            for name, was in stored.items()
            if not _same_kind(str(was), now.get(name, "none"))
        )
        problems.extend(
            f"roles.{name}: the run was started without it"
            for name in now.keys() - stored.keys()
            if now[name] not in {"builtin", "none"}
        )
    if problems:
        error = ValidationError("roles", problems)
        if path is not None and isinstance(stored, dict):
            error.add_note(f"hint: resume {path} with the roles it was started with")
        raise error
    return roles


def _looks_like_a_store(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(16) == b"SQLite format 3\0"


async def _preflight(roles: Roles) -> None:
    """The adapters' own checks, before anything of the run is made or opened."""
    if problems := await preflight_problems(roles):
        raise ValidationError("roles", problems)


def _source_problem(name: str, adapter: object, top: Path) -> str | None:
    """Why a built-in adapter given to a repository run cannot work there (None: it can)."""
    if not isinstance(adapter, _WORKSPACE_ADAPTERS):
        return None
    given = adapter.workspaces
    kind = type(adapter).__name__
    if isinstance(given, WorkspaceManager):
        return (
            f"roles.{name}: give the {kind} the repository's path, not a WorkspaceManager: "
            "the run opens its own workspaces"
        )
    if Path(given).resolve() != top:
        return f"roles.{name}: the {kind} works on {given}, but the run's repository is {top}"
    return None


def _bound(adapter: AdapterT, source: WorkspaceSource) -> AdapterT:
    """
    A built-in git adapter given the repository's path, bound to the run's workspaces.

    Built-in adapters take the path (``mesh.CommandCoder(repo, "agent {objective}")``)
    because the run opens the workspaces itself (`_source_problem` checked the path).
    """
    if not isinstance(adapter, _WORKSPACE_ADAPTERS):
        return adapter
    bound = copy.copy(adapter)
    bound.workspaces = source
    return bound


async def start_repository_run(
    plan: object,
    *,
    repo: str | os.PathLike[str],
    out: str | os.PathLike[str],
    roles: Roles,
    options: Mapping[str, Any],
) -> RepositoryRun:
    """
    Run ``plan`` on ``repo`` with real worktrees, proofs and delivery, durably (`mesh.run`).

    ``options`` are `mesh.run`'s, checked by it.
    """
    # Read and check everything before anything (folder, store, ledger, workspaces) exists.
    _plan_units(plan)
    checked_estimates(options.get("estimates"))
    identifier = options.get("run_id") or uuid.uuid4().hex[:12]
    if problem := text_problem(identifier):
        raise InputError(f"run_id {one_line(identifier)!r} {problem}")
    await repository_top(repo)  # a missing folder or repository, before anything is made
    top = await anyio.Path(repo).resolve()
    _checked_roles(roles, Path(top), None, None)
    workspaces = _workspaces_root(options.get("workspaces"), roles, Path(top))
    folder = Path(out)
    if await anyio.Path(folder).resolve() == top:
        raise InputError(
            f"out {one_line(str(folder))!r} is the repository's top folder: its files would be "
            "new untracked files in the checkout; give a folder of its own (inside is fine)"
        )
    # The target and the branch deliveries go to, read (and a bad branch refused) first.
    target = await open_target(Path(top), own_outputs=[folder])
    await target.branch(options.get("branch"))
    if await anyio.Path(folder / STORE_FILE).exists():
        raise StoreError(
            f"{folder / STORE_FILE}: a run store is already there",
            hint=f"continue that run with mesh.resume({str(folder)!r}, roles=...), "
            "or give another out folder",
        )
    # A run writes these into its folder: someone else's would be overwritten or appended to.
    taken = [name for name in _RUN_FILES if await anyio.Path(folder / name).exists()]
    if taken:
        raise InputError(
            f"out {one_line(str(folder))!r} already holds {', '.join(taken)}, which a run "
            "writes: give a folder of its own"
        )
    await _preflight(roles)
    # One process at a time: a second run into this folder is refused before any work.
    with owning(folder) as ownership:
        await ownership.settle()
        # The target as the run found it: what every delivery, resumed ones too, is checked against.
        baseline = await target.snapshot(options.get("branch"))
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        mode = options.get("delivery_mode")
        config = {
            # The caller's keys first: they can never stand in for mesh's own.
            **(options.get("extra_config") or {}),
            "plan": plan_document(plan),
            "repo": str(top),
            "workspaces": workspaces,
            "delivery_mode": mode.value if mode else None,
            "target": baseline.to_document(),
            "roles": role_kinds(roles),
            **{key: options.get(key, default) for key, default in STORED_OPTIONS.items()},
            **({"estimates": dict(options["estimates"])} if options.get("estimates") else {}),
            **({"retry": retry_document(options["retry"])} if options.get("retry") else {}),
        }
        store = RunStore.create(folder / STORE_FILE, run_id=identifier, config=config)
        ownership.hold_store(store.path)
        with store:
            return await _execute(plan, store=store, roles=roles, options=options, resume=None)


async def resume_repository_run(
    out: str | os.PathLike[str], *, roles: Roles, options: Mapping[str, Any]
) -> RepositoryRun:
    """
    Continue a repository run that stopped (a crash, a kill, a reboot): `mesh.resume`.

    The run's store is read back: completed and failed units keep their
    outcome; units that were in flight restart at their recorded attempt,
    proving their recorded candidates again or writing new ones. Worktrees of
    the dead process are removed, an interrupted ``git am`` is aborted, and a
    unit whose delivery had started is checked against the repository first,
    so that nothing is integrated twice.
    """
    given = Path(out)
    path = given / STORE_FILE if await anyio.Path(given).is_dir() else given
    if not await anyio.Path(path).is_file():
        raise StoreError(f"{path}: no run store there")
    # Nothing (not even the owner file) is made beside a file that is not a store.
    if not await anyio.to_thread.run_sync(_looks_like_a_store, path):
        raise StoreError(f"{path}: not a run store (not an SQLite database)")
    await _preflight(roles)
    with owning(path.parent) as ownership:
        ownership.hold_store(path)
        # What dead owners left running (a git command, a proof) ends before anything else.
        await ownership.settle()
        store = RunStore.open(path)
        with store:
            _check_config(store)
            top = Path(str(store.config["repo"]))
            _checked_roles(roles, top, store.config.get("roles"), path.parent)
            history = list(store.events())
            try:
                point = stored_point(history)
            except MeshError as exc:  # a recorded outcome or result it cannot carry on
                raise StoreError(f"{path} is damaged: {exc.message}") from None
            # The store is the record: the JSON-lines copy may run ahead of it (batched
            # commits) or end in half a line, so it is rewritten from the store.
            await anyio.to_thread.run_sync(
                _rewrite_ledger, store.path.parent / "ledger.jsonl", point.history
            )
            return await _execute(
                store.config["plan"], store=store, roles=roles, options=options, resume=point
            )


# What a run writes into its folder, besides its store and owner file.
_RUN_FILES: Final = ("plan.json", "ledger.jsonl", "patches")

# The options a repository run keeps in its store, with their defaults: a resume runs
# with the same ones.
STORED_OPTIONS: Final[Mapping[str, object]] = {
    "default_proof_command": None,
    "branch": None,
    "proof_timeout": 600.0,
    "call_timeout": 3600.0,
    "heartbeat_timeout": None,
    "pool_size": 4,
    "max_attempts": 2,
    "lease_ttl": 900.0,
    "clean_stretch": 3,
}

# What a resume reads from the stored configuration, and its types (absent: the default,
# for runs stored before mesh kept it).
_STORED: Final[Mapping[str, tuple[type, ...]]] = {
    "repo": (str,),
    "workspaces": (str, type(None)),
    "pool_size": (int,),
    "proof_timeout": (int, float),
    "call_timeout": (int, float, type(None)),
    "heartbeat_timeout": (int, float, type(None)),
    "max_attempts": (int,),
    "lease_ttl": (int, float),
    "clean_stretch": (int,),
}
_REQUIRED: Final = ("repo", "pool_size", "proof_timeout", "call_timeout")


def _workspaces_root(given: object, roles: Roles, top: Path) -> str | None:
    """
    Where the run's workspaces go (None: the default, inside the repository's git directory).

    ``given``, else, for a role that cannot work inside a ``.git`` folder (Claude
    Code will not edit there), a folder of this repository's in the user's cache.
    """
    if given is not None:
        chosen = Path(given).resolve()  # type: ignore[arg-type]
        if chosen.is_relative_to(top):
            raise InputError(
                f"workspaces {one_line(str(given))!r} is inside the repository {top}: its "
                "checkouts would be files of the repository; give a folder outside it"
            )
        if chosen.exists() and not chosen.is_dir():
            raise InputError(f"workspaces {one_line(str(given))!r} is not a folder")
        return str(chosen)
    if not any(getattr(adapter, "workspaces_outside_git", False) for _, adapter in roles.named()):
        return None
    # As the XDG specification says: a relative XDG_CACHE_HOME is ignored.
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "")
    if not cache.is_absolute():
        cache = Path.home() / ".cache"
    digest = hashlib.sha256(str(top).encode()).hexdigest()[:16]
    return str(cache / "mesh" / "workspaces" / f"{top.name[:40]}-{digest}")


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
        if key not in store.config and key not in _REQUIRED:
            continue
        value = store.config.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise StoreError(f"{store.path} is damaged: its configuration's {key!r} is unreadable")
    try:
        checked_estimates(store.config.get("estimates"))
    except InputError:
        raise StoreError(
            f"{store.path} is damaged: its configuration's 'estimates' is unreadable"
        ) from None
    stored_retry(store.config, store.path)


def retry_document(retry: object) -> dict[str, object]:
    """A run's retry policies as its store keeps them: the lanes that differ from the default."""
    return {
        lane.value: policy.to_document()
        for lane, policy in checked_retry(retry).items()
        if policy != DEFAULT_RETRY
    }


def stored_retry(config: Mapping[str, Any], path: Path) -> dict[Lane, RetryPolicy]:
    """The retry policies a store keeps; unreadable ones are damage."""
    stored = config.get("retry", {})
    try:
        if not isinstance(stored, Mapping):
            raise InputError("not an object")  # noqa: TRY301 - one message for all damage
        return checked_retry(
            {lane: RetryPolicy.from_document(document) for lane, document in stored.items()}
        )
    except InputError:
        raise StoreError(f"{path} is damaged: its configuration's 'retry' is unreadable") from None


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
    roles: Roles,
    options: Mapping[str, Any],
    resume: ResumePoint | None,
) -> RepositoryRun:
    config = {**STORED_OPTIONS, **store.config}
    folder = store.path.parent
    ledger_path = folder / "ledger.jsonl"
    plan_path = folder / "plan.json"
    patches = folder / "patches"
    sinks: list[LedgerSink] = [store, *options.get("sinks", ())]
    if (on_event := options.get("on_event")) is not None:
        sinks.append(CallbackSink(on_event))
    mode = config.get("delivery_mode")
    executor: Executor | None = options.get("executor")
    sandbox: Sandbox | None = options.get("sandbox")
    root = config.get("workspaces")
    async with WorkspaceManager(
        config["repo"], pool_size=config["pool_size"], root=None if root is None else Path(root)
    ) as workspaces:
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
        builtin = git_roles(
            workspaces,
            coder=roles.coder,
            integrator=integrator,
            proof_timeout=config["proof_timeout"],
            tracked_files=await workspaces.tracked_files(),
            portable=portable,
            sandbox=sandbox,
        )
        played = attrs.evolve(
            roles,
            coder=_bound(roles.coder, source),
            reducer=None if roles.reducer is None else _bound(roles.reducer, source),
            applier=builtin.applier if roles.applier is None else _bound(roles.applier, source),
            prover=builtin.prover if roles.prover is None else _bound(roles.prover, source),
            fixer=builtin.fixer if roles.fixer is None else _bound(roles.fixer, source),
            integrator=roles.integrator or integrator,
            locksmith=roles.locksmith or builtin.locksmith,
            replacements={
                lane: _bound(adapter, source) for lane, adapter in roles.replacements.items()
            },
        )
        async with Orchestrator(
            roles=played,
            budget=options.get("budget"),
            max_attempts=config["max_attempts"],
            call_timeout=config["call_timeout"],
            heartbeat_timeout=config["heartbeat_timeout"],
            lease_ttl=config["lease_ttl"],
            clean_stretch=config["clean_stretch"],
            clock=options.get("clock"),
            sinks=sinks,
            ledger_path=ledger_path,
            run_id=store.run_id,
            executor=executor,
            estimates=config.get("estimates"),
            retry=stored_retry(config, store.path),
            resolve_base=workspaces.resolve,
            preflight=False,  # asked before the run's folder was made
            tracer_provider=options.get("tracer_provider"),
            **({"strict": options["strict"]} if "strict" in options else {}),
        ) as orchestrator:
            try:
                result = await orchestrator.execute(
                    plan,
                    delivery_mode=DeliveryMode(mode) if mode else None,
                    default_proof_command=config.get("default_proof_command"),
                    resume=resume,
                )
            except AdapterMistake as mistake:
                mistake.add_note(
                    f"hint: the run's state is kept in {folder}: fix the adapter, then continue "
                    f"with mesh.resume({str(folder)!r}, roles=...)"
                )
                raise
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
