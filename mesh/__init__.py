"""
mesh: an embeddable, plan-driven orchestration engine for coding agents.

A plan of steps is sliced into units with dependencies; each unit is written
by several candidate authors, proved in isolation, adjudicated by a risk-based
quorum and delivered by a single integrator, under one budget-derived
concurrency target and an occurred-events ledger.

This module is the whole public API; ``mesh.commands`` mirrors the command line.
"""

from __future__ import annotations

from ._adapters import CommandProver as CommandProver
from ._adapters import GitApplier as GitApplier
from ._adapters import MechanicalFixer as MechanicalFixer
from ._batch import floor_gate as floor_gate
from ._batch import format_csv as format_csv
from ._batch import parse_batch_csv as parse_batch_csv
from ._batch import parse_deps_csv as parse_deps_csv
from ._batch import prepare_batch as prepare_batch
from ._batch import validate_deps as validate_deps
from ._budget import budget_policy as budget_policy
from ._budget import replay as replay
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._coders import CallableCoder as CallableCoder
from ._coders import CommandCoder as CommandCoder
from ._coders import ScriptedCoder as ScriptedCoder
from ._coders import check_command_template as check_command_template
from ._coders import diff_candidate as diff_candidate
from ._contract import MAX_PROOF_ATTEMPTS as MAX_PROOF_ATTEMPTS
from ._contract import parse_worker_result as parse_worker_result
from ._contract import worker_result_document as worker_result_document
from ._enums import LANE_DECISIONS as LANE_DECISIONS
from ._enums import QUORUM_BY_RISK as QUORUM_BY_RISK
from ._enums import BudgetMode as BudgetMode
from ._enums import Decision as Decision
from ._enums import DeliveryMode as DeliveryMode
from ._enums import FailureCode as FailureCode
from ._enums import FloorResult as FloorResult
from ._enums import Lane as Lane
from ._enums import ProofStatus as ProofStatus
from ._enums import RiskTier as RiskTier
from ._enums import SpecialPath as SpecialPath
from ._enums import StepStatus as StepStatus
from ._errors import CsvContractError as CsvContractError
from ._errors import ExecutorError as ExecutorError
from ._errors import FileAccessError as FileAccessError
from ._errors import FloorGateFailed as FloorGateFailed
from ._errors import GateNotMet as GateNotMet
from ._errors import InputError as InputError
from ._errors import InvalidOutputSchema as InvalidOutputSchema
from ._errors import MeshError as MeshError
from ._errors import OptionError as OptionError
from ._errors import PathCollisionError as PathCollisionError
from ._errors import PlanError as PlanError
from ._errors import RunFailed as RunFailed
from ._errors import TransitionError as TransitionError
from ._errors import UnitFailed as UnitFailed
from ._errors import ValidationError as ValidationError
from ._events import CallbackSink as CallbackSink
from ._events import JsonLinesSink as JsonLinesSink
from ._events import LedgerEvent as LedgerEvent
from ._events import LedgerSink as LedgerSink
from ._events import MemorySink as MemorySink
from ._events import StructlogSink as StructlogSink
from ._executors import Executor as Executor
from ._executors import ExecutorInfo as ExecutorInfo
from ._executors import LocalExecutor as LocalExecutor
from ._executors import Placed as Placed
from ._executors import executor_slots as executor_slots
from ._gate import PathChange as PathChange
from ._gate import gate_problems as gate_problems
from ._git import GitError as GitError
from ._integrator import GitIntegrator as GitIntegrator
from ._ledger import occurred as occurred
from ._ledger import occurred_events as occurred_events
from ._lifecycle import Trigger as Trigger
from ._lifecycle import UnitState as UnitState
from ._owner import RunOwned as RunOwned
from ._patch import FileChange as FileChange
from ._patch import patch_changes as patch_changes
from ._patch import scope_problems as scope_problems
from ._plan import check_dependencies as check_dependencies
from ._plan import parse_plan as parse_plan
from ._plan import parse_units as parse_units
from ._plan import plan_sync as plan_sync
from ._plan import slice_plan as slice_plan
from ._ray import RayExecutor as RayExecutor
from ._records import BATCH_COLUMNS as BATCH_COLUMNS
from ._records import OUTPUT_COLUMNS as OUTPUT_COLUMNS
from ._records import REQUIRED_BATCH_COLUMNS as REQUIRED_BATCH_COLUMNS
from ._records import BatchRow as BatchRow
from ._records import BudgetDecision as BudgetDecision
from ._records import DepsRow as DepsRow
from ._records import OutputRow as OutputRow
from ._records import Plan as Plan
from ._records import PlanStep as PlanStep
from ._records import PlanSummary as PlanSummary
from ._records import PreparedBatch as PreparedBatch
from ._records import ProofEvidence as ProofEvidence
from ._records import ReduceRecord as ReduceRecord
from ._records import ReplayResult as ReplayResult
from ._records import SliceResult as SliceResult
from ._records import Unit as Unit
from ._records import Wave as Wave
from ._records import WorkerResult as WorkerResult
from ._repo_run import RepositoryRun as RepositoryRun
from ._repo_run import git_roles as git_roles
from ._repo_run import resume_in_repository as resume_in_repository
from ._repo_run import run_in_repository as run_in_repository
from ._report import prose_ledger as prose_ledger
from ._report import render_report as render_report
from ._resume import resume_point as resume_point
from ._resume import unit_states as unit_states
from ._roles import AdjudicationRequest as AdjudicationRequest
from ._roles import ApplyRequest as ApplyRequest
from ._roles import AuthorRequest as AuthorRequest
from ._roles import DeliveryRequest as DeliveryRequest
from ._roles import LeaseRequest as LeaseRequest
from ._roles import LeaseTable as LeaseTable
from ._roles import ProofRequest as ProofRequest
from ._roles import Roles as Roles
from ._sandbox import Sandbox as Sandbox
from ._sandbox import SandboxUnavailable as SandboxUnavailable
from ._scheduler import Orchestrator as Orchestrator
from ._scheduler import ResumePoint as ResumePoint
from ._scheduler import RunResult as RunResult
from ._scheduler import RunStatistics as RunStatistics
from ._scheduler import UnitCheckpoint as UnitCheckpoint
from ._scheduler import append_learning as append_learning
from ._scheduler import run as run
from ._scopes import in_scope as in_scope
from ._scopes import scopes_overlap as scopes_overlap
from ._store import STORE_FILE as STORE_FILE
from ._store import RunStore as RunStore
from ._store import StoreError as StoreError
from ._summary import RunMetrics as RunMetrics
from ._summary import UnitOutcome as UnitOutcome
from ._summary import render_ledger as render_ledger
from ._version import __version__ as __version__
from ._wave import select_wave as select_wave
from ._workspaces import ChangeReading as ChangeReading
from ._workspaces import Workspace as Workspace
from ._workspaces import WorkspaceManager as WorkspaceManager

__all__ = [
    "BATCH_COLUMNS",
    "LANE_DECISIONS",
    "MAX_PROOF_ATTEMPTS",
    "OUTPUT_COLUMNS",
    "QUORUM_BY_RISK",
    "REQUIRED_BATCH_COLUMNS",
    "STORE_FILE",
    "AdjudicationRequest",
    "ApplyRequest",
    "AuthorRequest",
    "BatchRow",
    "BudgetDecision",
    "BudgetMode",
    "CallableCoder",
    "CallbackSink",
    "ChangeReading",
    "Clock",
    "CommandCoder",
    "CommandProver",
    "CsvContractError",
    "Decision",
    "DeliveryMode",
    "DeliveryRequest",
    "DepsRow",
    "Executor",
    "ExecutorError",
    "ExecutorInfo",
    "FailureCode",
    "FileAccessError",
    "FileChange",
    "FloorGateFailed",
    "FloorResult",
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
    "OutputRow",
    "PathChange",
    "PathCollisionError",
    "Placed",
    "Plan",
    "PlanError",
    "PlanStep",
    "PlanSummary",
    "PreparedBatch",
    "ProofEvidence",
    "ProofRequest",
    "ProofStatus",
    "RayExecutor",
    "ReduceRecord",
    "ReplayResult",
    "RepositoryRun",
    "ResumePoint",
    "RiskTier",
    "Roles",
    "RunFailed",
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
    "floor_gate",
    "format_csv",
    "gate_problems",
    "git_roles",
    "in_scope",
    "occurred",
    "occurred_events",
    "parse_batch_csv",
    "parse_deps_csv",
    "parse_plan",
    "parse_units",
    "parse_worker_result",
    "patch_changes",
    "plan_sync",
    "prepare_batch",
    "prose_ledger",
    "render_ledger",
    "render_report",
    "replay",
    "resume_in_repository",
    "resume_point",
    "run",
    "run_in_repository",
    "scope_problems",
    "scopes_overlap",
    "select_wave",
    "slice_plan",
    "unit_states",
    "validate_deps",
    "worker_result_document",
]

# Re-exported classes and functions report `mesh` as their home, so reprs,
# tracebacks and docs say `mesh.Unit`, not `mesh._records.Unit`.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("mesh._"):
        _obj.__module__ = "mesh"
del _name, _obj
