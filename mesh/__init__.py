"""
An embeddable, plan-driven orchestration engine for coding agents.

A plan of steps is sliced into units with dependencies; each unit is written
by several candidate authors, proved in isolation, adjudicated by a risk-based
quorum and delivered by a single integrator, under one budget-derived
concurrency target and an occurred-events ledger.

An index of the public API by purpose, the engine first; ``help(mesh.NAME)``
documents each name, and the submodules at the end hold the rest.

Running a plan

- `run`, `run_async`: run a plan to the end, from sync or async code.
- `resume`, `resume_async`: continue a repository run that stopped.
- `start`, `start_async`: start a run and watch or steer it while it goes;
  `RunHandle`, `AsyncRunHandle`: the run going on; `EventStream`: its events
  as they happen (``for``/``async for``); `PlanChange`: what a plan change
  during the run did (``update_plan``).
- `Orchestrator`: the engine itself, for full control (``async with``).
- `RunResult`, `UnitOutcome`, `OutcomeState`, `RunMetrics`: what a run returns.
- `RunStatistics`, `UnitState`, `Trigger`: a run in progress, a unit's lifecycle.
- `ResumePoint`, `UnitCheckpoint`, `resume_point`, `unit_states`: where a
  stopped run stands, from its events.

Roles and adapters

- `Roles`: the adapters of a run, one per role.
- `CommandCoder`, `CallableCoder`, `ScriptedCoder`: coders around an agent
  command line, a Python callable, or scripted files.
- `git_roles`, `GitApplier`, `CommandProver`, `MechanicalFixer`,
  `GitIntegrator`, `LeaseTable`: mesh's own roles around your coders.
- `check_command_template`, `diff_candidate`: for adapters of your own.
- `RetryPolicy`: how often a lane's failed calls are made again, and after what wait.
- `rerun_safe`, `not_rerun_safe`: whether an adapter may be called again
  for a request a crash interrupted.
- `heartbeat`: an adapter's word that its long call is alive (a run with
  ``heartbeat_timeout`` ends a call whose heartbeats stop).
- `note_call`: facts an adapter reports about its call (an agent's turns,
  tokens, cost, final message) for the call's ledger event.
- `Executor`, `LocalExecutor`, `RayExecutor`, `ExecutorInfo`, `Placed`,
  `executor_slots`: where adapter calls run.
- `Clock`, `SystemClock`: where the engine reads time.

Requests and answers

- `AuthorRequest`, `LeaseRequest`, `ApplyRequest`, `ProofRequest`,
  `AdjudicationRequest`, `DeliveryRequest`: what each role is asked.
- `WorkerResult`, `ProofEvidence`, `ReduceRecord`, `parse_worker_result`,
  `worker_result_document`: answers under output contract v2
  (``mesh.answers`` builds them).
- `Lane`, `Decision`, `LANE_DECISIONS`, `ProofStatus`, `FailureCode`,
  `MAX_PROOF_ATTEMPTS`: their closed vocabularies.

Records

- `Plan`, `PlanStep`, `StepStatus`, `Unit`: a plan and the units sliced from it.
- `RiskTier`, `QUORUM_BY_RISK`, `DeliveryMode`, `SpecialPath`: a unit's risk
  tier, delivery and the special paths it may write.
- `BudgetDecision`, `BudgetMode`, `ReplayResult`, `PlanSummary`,
  `SliceResult`, `Wave`: what the planning helpers return.

Ledger and reports

- `LedgerEvent`, `LedgerSink`, `MemorySink`, `JsonLinesSink`, `CallbackSink`,
  `StructlogSink`: a run's events and where they go.
- `RunStore`, `STORE_FILE`: a run's configuration and events in SQLite.
- `render_ledger`, `prose_ledger`, `render_report`, `unit_durations`,
  `append_learning`: reports, timings and lessons from a run.
- `occurred`, `occurred_events`: which ledger values record something that
  happened.

Planning helpers

- `parse_plan`, `parse_units`, `check_dependencies`, `slice_plan`,
  `plan_sync`: plans and their units.
- `budget_policy`, `replay`, `select_wave`: the budget, a preview of its
  waves, the next wave.

Repository, workspaces and git

- `RepositoryRun`: a finished run on a repository, and where its files are.
- `WorkspaceManager`, `Workspace`, `ChangeReading`: git worktrees and what a
  change in one does.
- `patch_changes`, `FileChange`, `scope_problems`, `gate_problems`,
  `PathChange`, `in_scope`, `scopes_overlap`: what a change touches and
  whether it may.
- `Sandbox`: running commands under bubblewrap.

Errors

- `MeshError`: the root; every error carries a `FailureCode`.
- `InputError`, `ValidationError`, `PlanError`, `OptionError`,
  `PathCollisionError`, `InvalidOutputSchema`: input mesh cannot use.
- `FileAccessError`, `ExecutorError`, `StoreError`, `RunOwned`,
  `SandboxUnavailable`, `GitError`: the machine, a store or a tool failed.
- `TransitionError`, `GateNotMet`, `UnitFailed`, `RunFailed`: units that
  could not move on, or did not complete; `RunCancelled`: a run cancelled.
- `AdapterMistake`: a strict run stopped at an adapter's exception or
  invalid answer.

Submodules

- ``mesh.agents``: real coding agents as coders and fixers: the Codex CLI,
  Claude Code, Aider and pydantic-ai agents, and any agent program you describe.
- ``mesh.answers``: answer builders, one per decision: a checked `WorkerResult`
  built from its request.
- ``mesh.batch``: the batch CSV contract (the ``wave`` and ``run_csv`` commands).
- ``mesh.testing``: fake adapters, a manual clock, ledger capture and scripted
  model servers, for tests.
- ``mesh.mcp``: mesh as an MCP server (``mesh mcp``; needs ``mesh[mcp]``).
- ``mesh.typing``: protocols and type aliases for code that plugs into mesh.
- ``mesh.commands``: the command line as Python functions.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from . import answers as answers
    from .contracts._clock import Clock as Clock
    from .contracts._clock import SystemClock as SystemClock
    from .contracts._contract import MAX_PROOF_ATTEMPTS as MAX_PROOF_ATTEMPTS
    from .contracts._contract import parse_worker_result as parse_worker_result
    from .contracts._contract import worker_result_document as worker_result_document
    from .contracts._enums import LANE_DECISIONS as LANE_DECISIONS
    from .contracts._enums import QUORUM_BY_RISK as QUORUM_BY_RISK
    from .contracts._enums import BudgetMode as BudgetMode
    from .contracts._enums import Decision as Decision
    from .contracts._enums import DeliveryMode as DeliveryMode
    from .contracts._enums import FailureCode as FailureCode
    from .contracts._enums import Lane as Lane
    from .contracts._enums import ProofStatus as ProofStatus
    from .contracts._enums import RiskTier as RiskTier
    from .contracts._enums import SpecialPath as SpecialPath
    from .contracts._enums import StepStatus as StepStatus
    from .contracts._errors import AdapterMistake as AdapterMistake
    from .contracts._errors import ExecutorError as ExecutorError
    from .contracts._errors import FileAccessError as FileAccessError
    from .contracts._errors import GateNotMet as GateNotMet
    from .contracts._errors import InputError as InputError
    from .contracts._errors import InvalidOutputSchema as InvalidOutputSchema
    from .contracts._errors import MeshError as MeshError
    from .contracts._errors import OptionError as OptionError
    from .contracts._errors import PathCollisionError as PathCollisionError
    from .contracts._errors import PlanError as PlanError
    from .contracts._errors import RunCancelled as RunCancelled
    from .contracts._errors import RunFailed as RunFailed
    from .contracts._errors import TransitionError as TransitionError
    from .contracts._errors import UnitFailed as UnitFailed
    from .contracts._errors import ValidationError as ValidationError
    from .contracts._events import CallbackSink as CallbackSink
    from .contracts._events import JsonLinesSink as JsonLinesSink
    from .contracts._events import LedgerEvent as LedgerEvent
    from .contracts._events import LedgerSink as LedgerSink
    from .contracts._events import MemorySink as MemorySink
    from .contracts._events import StructlogSink as StructlogSink
    from .contracts._gate import PathChange as PathChange
    from .contracts._gate import gate_problems as gate_problems
    from .contracts._ledger import occurred as occurred
    from .contracts._ledger import occurred_events as occurred_events
    from .contracts._patch import FileChange as FileChange
    from .contracts._patch import patch_changes as patch_changes
    from .contracts._patch import scope_problems as scope_problems
    from .contracts._records import BudgetDecision as BudgetDecision
    from .contracts._records import Plan as Plan
    from .contracts._records import PlanStep as PlanStep
    from .contracts._records import PlanSummary as PlanSummary
    from .contracts._records import ProofEvidence as ProofEvidence
    from .contracts._records import ReduceRecord as ReduceRecord
    from .contracts._records import ReplayResult as ReplayResult
    from .contracts._records import SliceResult as SliceResult
    from .contracts._records import Unit as Unit
    from .contracts._records import Wave as Wave
    from .contracts._records import WorkerResult as WorkerResult
    from .contracts._scopes import in_scope as in_scope
    from .contracts._scopes import scopes_overlap as scopes_overlap
    from .engine._call_facts import heartbeat as heartbeat
    from .engine._call_facts import note_call as note_call
    from .engine._executors import Executor as Executor
    from .engine._executors import ExecutorInfo as ExecutorInfo
    from .engine._executors import LocalExecutor as LocalExecutor
    from .engine._executors import Placed as Placed
    from .engine._executors import executor_slots as executor_slots
    from .engine._lifecycle import Trigger as Trigger
    from .engine._lifecycle import UnitState as UnitState
    from .engine._plan_change import PlanChange as PlanChange
    from .engine._ray import RayExecutor as RayExecutor
    from .engine._report import prose_ledger as prose_ledger
    from .engine._report import render_report as render_report
    from .engine._results import ResumePoint as ResumePoint
    from .engine._results import RunResult as RunResult
    from .engine._results import RunStatistics as RunStatistics
    from .engine._results import UnitCheckpoint as UnitCheckpoint
    from .engine._results import append_learning as append_learning
    from .engine._resume import resume_point as resume_point
    from .engine._resume import unit_states as unit_states
    from .engine._retry import RetryPolicy as RetryPolicy
    from .engine._roles import AdjudicationRequest as AdjudicationRequest
    from .engine._roles import ApplyRequest as ApplyRequest
    from .engine._roles import AuthorRequest as AuthorRequest
    from .engine._roles import DeliveryRequest as DeliveryRequest
    from .engine._roles import LeaseRequest as LeaseRequest
    from .engine._roles import LeaseTable as LeaseTable
    from .engine._roles import ProofRequest as ProofRequest
    from .engine._roles import Roles as Roles
    from .engine._roles import not_rerun_safe as not_rerun_safe
    from .engine._roles import rerun_safe as rerun_safe
    from .engine._scheduler import Orchestrator as Orchestrator
    from .engine._stream import EventStream as EventStream
    from .engine._summary import OutcomeState as OutcomeState
    from .engine._summary import RunMetrics as RunMetrics
    from .engine._summary import UnitOutcome as UnitOutcome
    from .engine._summary import render_ledger as render_ledger
    from .engine._summary import unit_durations as unit_durations
    from .git._adapters import CommandProver as CommandProver
    from .git._adapters import GitApplier as GitApplier
    from .git._adapters import MechanicalFixer as MechanicalFixer
    from .git._coders import CallableCoder as CallableCoder
    from .git._coders import CommandCoder as CommandCoder
    from .git._coders import ScriptedCoder as ScriptedCoder
    from .git._coders import check_command_template as check_command_template
    from .git._coders import diff_candidate as diff_candidate
    from .git._git import GitError as GitError
    from .git._integrator import GitIntegrator as GitIntegrator
    from .git._workspaces import ChangeReading as ChangeReading
    from .git._workspaces import Workspace as Workspace
    from .git._workspaces import WorkspaceManager as WorkspaceManager
    from .host._owner import RunOwned as RunOwned
    from .host._sandbox import Sandbox as Sandbox
    from .host._sandbox import SandboxUnavailable as SandboxUnavailable
    from .planning._budget import budget_policy as budget_policy
    from .planning._budget import replay as replay
    from .planning._plan import check_dependencies as check_dependencies
    from .planning._plan import parse_plan as parse_plan
    from .planning._plan import parse_units as parse_units
    from .planning._plan import plan_sync as plan_sync
    from .planning._plan import slice_plan as slice_plan
    from .planning._wave import select_wave as select_wave
    from .store._front import resume as resume
    from .store._front import resume_async as resume_async
    from .store._front import run as run
    from .store._front import run_async as run_async
    from .store._handle import AsyncRunHandle as AsyncRunHandle
    from .store._handle import RunHandle as RunHandle
    from .store._handle import start as start
    from .store._handle import start_async as start_async
    from .store._repo_run import RepositoryRun as RepositoryRun
    from .store._repo_run import git_roles as git_roles
    from .store._store import STORE_FILE as STORE_FILE
    from .store._store import RunStore as RunStore
    from .store._store import StoreError as StoreError

__all__ = [
    "LANE_DECISIONS",
    "MAX_PROOF_ATTEMPTS",
    "QUORUM_BY_RISK",
    "STORE_FILE",
    "AdapterMistake",
    "AdjudicationRequest",
    "ApplyRequest",
    "AsyncRunHandle",
    "AuthorRequest",
    "BudgetDecision",
    "BudgetMode",
    "CallableCoder",
    "CallbackSink",
    "ChangeReading",
    "Clock",
    "CommandCoder",
    "CommandProver",
    "Decision",
    "DeliveryMode",
    "DeliveryRequest",
    "EventStream",
    "Executor",
    "ExecutorError",
    "ExecutorInfo",
    "FailureCode",
    "FileAccessError",
    "FileChange",
    "GateNotMet",
    "GitApplier",
    "GitError",
    "GitIntegrator",
    "InputError",
    "InvalidOutputSchema",
    "JsonLinesSink",
    "Lane",
    "LeaseRequest",
    "LeaseTable",
    "LedgerEvent",
    "LedgerSink",
    "LocalExecutor",
    "MechanicalFixer",
    "MemorySink",
    "MeshError",
    "OptionError",
    "Orchestrator",
    "OutcomeState",
    "PathChange",
    "PathCollisionError",
    "Placed",
    "Plan",
    "PlanChange",
    "PlanError",
    "PlanStep",
    "PlanSummary",
    "ProofEvidence",
    "ProofRequest",
    "ProofStatus",
    "RayExecutor",
    "ReduceRecord",
    "ReplayResult",
    "RepositoryRun",
    "ResumePoint",
    "RetryPolicy",
    "RiskTier",
    "Roles",
    "RunCancelled",
    "RunFailed",
    "RunHandle",
    "RunMetrics",
    "RunOwned",
    "RunResult",
    "RunStatistics",
    "RunStore",
    "Sandbox",
    "SandboxUnavailable",
    "ScriptedCoder",
    "SliceResult",
    "SpecialPath",
    "StepStatus",
    "StoreError",
    "StructlogSink",
    "SystemClock",
    "TransitionError",
    "Trigger",
    "Unit",
    "UnitCheckpoint",
    "UnitFailed",
    "UnitOutcome",
    "UnitState",
    "ValidationError",
    "Wave",
    "WorkerResult",
    "Workspace",
    "WorkspaceManager",
    "__version__",
    "append_learning",
    "budget_policy",
    "check_command_template",
    "check_dependencies",
    "diff_candidate",
    "executor_slots",
    "gate_problems",
    "git_roles",
    "heartbeat",
    "in_scope",
    "not_rerun_safe",
    "note_call",
    "occurred",
    "occurred_events",
    "parse_plan",
    "parse_units",
    "parse_worker_result",
    "patch_changes",
    "plan_sync",
    "prose_ledger",
    "render_ledger",
    "render_report",
    "replay",
    "rerun_safe",
    "resume",
    "resume_async",
    "resume_point",
    "run",
    "run_async",
    "scope_problems",
    "scopes_overlap",
    "select_wave",
    "slice_plan",
    "start",
    "start_async",
    "unit_durations",
    "unit_states",
    "worker_result_document",
]

# Each public name and the private module that defines it. Names load on first use,
# so `import mesh` and the helper commands do not pay for the engine's imports.
_HOMES: dict[str, str] = {
    "Clock": ".contracts._clock",
    "SystemClock": ".contracts._clock",
    "MAX_PROOF_ATTEMPTS": ".contracts._contract",
    "parse_worker_result": ".contracts._contract",
    "worker_result_document": ".contracts._contract",
    "LANE_DECISIONS": ".contracts._enums",
    "QUORUM_BY_RISK": ".contracts._enums",
    "BudgetMode": ".contracts._enums",
    "Decision": ".contracts._enums",
    "DeliveryMode": ".contracts._enums",
    "FailureCode": ".contracts._enums",
    "Lane": ".contracts._enums",
    "ProofStatus": ".contracts._enums",
    "RiskTier": ".contracts._enums",
    "SpecialPath": ".contracts._enums",
    "StepStatus": ".contracts._enums",
    "ExecutorError": ".contracts._errors",
    "FileAccessError": ".contracts._errors",
    "GateNotMet": ".contracts._errors",
    "InputError": ".contracts._errors",
    "InvalidOutputSchema": ".contracts._errors",
    "AdapterMistake": ".contracts._errors",
    "MeshError": ".contracts._errors",
    "OptionError": ".contracts._errors",
    "PathCollisionError": ".contracts._errors",
    "PlanError": ".contracts._errors",
    "RunCancelled": ".contracts._errors",
    "RunFailed": ".contracts._errors",
    "TransitionError": ".contracts._errors",
    "UnitFailed": ".contracts._errors",
    "ValidationError": ".contracts._errors",
    "CallbackSink": ".contracts._events",
    "JsonLinesSink": ".contracts._events",
    "LedgerEvent": ".contracts._events",
    "LedgerSink": ".contracts._events",
    "MemorySink": ".contracts._events",
    "StructlogSink": ".contracts._events",
    "PathChange": ".contracts._gate",
    "gate_problems": ".contracts._gate",
    "occurred": ".contracts._ledger",
    "occurred_events": ".contracts._ledger",
    "FileChange": ".contracts._patch",
    "patch_changes": ".contracts._patch",
    "scope_problems": ".contracts._patch",
    "BudgetDecision": ".contracts._records",
    "Plan": ".contracts._records",
    "PlanStep": ".contracts._records",
    "PlanSummary": ".contracts._records",
    "ProofEvidence": ".contracts._records",
    "ReduceRecord": ".contracts._records",
    "ReplayResult": ".contracts._records",
    "SliceResult": ".contracts._records",
    "Unit": ".contracts._records",
    "Wave": ".contracts._records",
    "WorkerResult": ".contracts._records",
    "in_scope": ".contracts._scopes",
    "scopes_overlap": ".contracts._scopes",
    "Executor": ".engine._executors",
    "ExecutorInfo": ".engine._executors",
    "LocalExecutor": ".engine._executors",
    "Placed": ".engine._executors",
    "executor_slots": ".engine._executors",
    "Trigger": ".engine._lifecycle",
    "UnitState": ".engine._lifecycle",
    "RayExecutor": ".engine._ray",
    "prose_ledger": ".engine._report",
    "render_report": ".engine._report",
    "resume_point": ".engine._resume",
    "unit_states": ".engine._resume",
    "AdjudicationRequest": ".engine._roles",
    "ApplyRequest": ".engine._roles",
    "AuthorRequest": ".engine._roles",
    "DeliveryRequest": ".engine._roles",
    "LeaseRequest": ".engine._roles",
    "LeaseTable": ".engine._roles",
    "ProofRequest": ".engine._roles",
    "Roles": ".engine._roles",
    "not_rerun_safe": ".engine._roles",
    "note_call": ".engine._call_facts",
    "heartbeat": ".engine._call_facts",
    "rerun_safe": ".engine._roles",
    "Orchestrator": ".engine._scheduler",
    "EventStream": ".engine._stream",
    "PlanChange": ".engine._plan_change",
    "RetryPolicy": ".engine._retry",
    "AsyncRunHandle": ".store._handle",
    "RunHandle": ".store._handle",
    "start": ".store._handle",
    "start_async": ".store._handle",
    "ResumePoint": ".engine._results",
    "RunResult": ".engine._results",
    "RunStatistics": ".engine._results",
    "UnitCheckpoint": ".engine._results",
    "append_learning": ".engine._results",
    "OutcomeState": ".engine._summary",
    "RunMetrics": ".engine._summary",
    "UnitOutcome": ".engine._summary",
    "render_ledger": ".engine._summary",
    "unit_durations": ".engine._summary",
    "CommandProver": ".git._adapters",
    "GitApplier": ".git._adapters",
    "MechanicalFixer": ".git._adapters",
    "CallableCoder": ".git._coders",
    "CommandCoder": ".git._coders",
    "ScriptedCoder": ".git._coders",
    "check_command_template": ".git._coders",
    "diff_candidate": ".git._coders",
    "GitError": ".git._git",
    "GitIntegrator": ".git._integrator",
    "ChangeReading": ".git._workspaces",
    "Workspace": ".git._workspaces",
    "WorkspaceManager": ".git._workspaces",
    "RunOwned": ".host._owner",
    "Sandbox": ".host._sandbox",
    "SandboxUnavailable": ".host._sandbox",
    "budget_policy": ".planning._budget",
    "replay": ".planning._budget",
    "check_dependencies": ".planning._plan",
    "parse_plan": ".planning._plan",
    "parse_units": ".planning._plan",
    "plan_sync": ".planning._plan",
    "slice_plan": ".planning._plan",
    "select_wave": ".planning._wave",
    "RepositoryRun": ".store._repo_run",
    "git_roles": ".store._repo_run",
    "resume": ".store._front",
    "resume_async": ".store._front",
    "run": ".store._front",
    "run_async": ".store._front",
    "STORE_FILE": ".store._store",
    "RunStore": ".store._store",
    "StoreError": ".store._store",
}


# Hidden from type checkers, so a misspelt name stays a type error.
if not TYPE_CHECKING:  # pragma: no branch - true whenever the module runs

    def __getattr__(name: str) -> object:
        if name == "answers":  # a public submodule, reachable after a plain `import mesh`
            return importlib.import_module(".answers", __name__)
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module 'mesh' has no attribute {name!r}")
        value = getattr(importlib.import_module(home, __name__), name)
        # Re-exported classes and functions report `mesh` as their home, so reprs,
        # tracebacks and docs say `mesh.Unit`, not `mesh.contracts._records.Unit`.
        _publish(home)
        globals()[name] = value
        return value

    def _publish(home: str) -> None:
        """Make every public name of ``home`` report `mesh` as its home, all at once."""
        for public, module in _HOMES.items():
            if module == home:
                _rehome(getattr(importlib.import_module(home, __name__), public), __name__)


def _rehome(value: object, public_module: str) -> None:
    """Make ``value``, defined in a private module, report ``public_module`` as its home."""
    if "._" not in getattr(value, "__module__", ""):
        return
    if isinstance(value, type):
        # Annotations are strings (`from __future__ import annotations`), read in the
        # module `__module__` names: evaluated now, in the module that defines them, so
        # `typing.get_type_hints`, cattrs and subclasses keep working once `__module__`
        # says the public module.
        value.__annotations__ = inspect.get_annotations(value, eval_str=True)
        if hasattr(value, "__attrs_attrs__"):
            importlib.import_module("attrs").resolve_types(value)
    value.__module__ = public_module


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
