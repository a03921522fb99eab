"""
Frozen, keyword-only records of the mesh contracts.

Input records (`PlanStep`, `Plan`, `Unit`, `WorkerResult`, `BatchRow`,
`DepsRow`) are built by the strict parsers; result records (`BudgetDecision`,
`ReplayResult`, `PlanSummary`, `SliceResult`, `Wave`, `PreparedBatch`) are what
the pure command functions return, and ``to_document()`` gives the exact JSON
document of the matching CLI command.
"""

from __future__ import annotations

import json
import math
from typing import Final

import attrs

from ._enums import (
    BudgetMode,
    Decision,
    DeliveryMode,
    FailureCode,
    FloorResult,
    Lane,
    ProofStatus,
    RiskTier,
    SpecialPath,
)

__all__ = [
    "BATCH_COLUMNS",
    "OUTPUT_COLUMNS",
    "REQUIRED_BATCH_COLUMNS",
    "BatchRow",
    "BudgetDecision",
    "DepsRow",
    "OutputRow",
    "Plan",
    "PlanStep",
    "PlanSummary",
    "PreparedBatch",
    "ProofEvidence",
    "ReduceRecord",
    "ReplayResult",
    "SliceResult",
    "Unit",
    "Wave",
    "WorkerResult",
]

SCOPE_SEPARATOR: Final = ";"
"""Separates write-scope roots when a scope travels as one CSV or JSON string."""


def join_scope(scope: tuple[str, ...]) -> str:
    """Render a write scope as the single string used in CSV cells and unit documents."""
    return SCOPE_SEPARATOR.join(scope)


def split_scope(text: str) -> tuple[str, ...]:
    """Parse a write-scope string (roots separated by ``;``) into its roots."""
    roots = tuple(part.strip() for part in text.split(SCOPE_SEPARATOR))
    return tuple(root for root in roots if root) or ("unknown",)


def estimate_problem(value: object) -> str | None:
    """Why ``value`` is no ``estimate_seconds`` (None: it is one, or it is None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number of seconds, got {type(value).__name__}"
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float: not finite, and too long to show
        return "expected a positive, finite number of seconds, got a number out of range"
    if not math.isfinite(seconds) or seconds <= 0:
        return f"expected a positive, finite number of seconds, got {value!r}"
    return None


def _check_estimate(
    _: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    problem = estimate_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name}: {problem}")


@attrs.frozen(kw_only=True)
class PlanStep:
    """
    One step of an ``update_plan`` plan, with mesh's optional per-step fields.

    .. versionadded:: 0.1.0
    """

    step: str | None = None
    """What to do (the update_plan text)."""
    title: str | None = None
    """Fallback text when ``step`` is absent."""
    status: str = "pending"
    """``pending``, ``in_progress``, ``completed`` or any other text (counted as other)."""
    id: str | None = None
    """Identifier other steps name in ``deps``."""
    deps: tuple[str, ...] = ()
    """Ids of steps that must be completed first."""
    unit_scope: str | None = None
    """What the unit is about; two units with one scope never run in the same wave."""
    write_scope: tuple[str, ...] | None = None
    """Path roots or globs the unit may change."""
    constraints: str | None = None
    """Constraints the authors must respect."""
    invariants: str | None = None
    """Invariants a candidate must preserve."""
    proof_command: str | None = None
    """Shell command proving a candidate (exit 0 = pass)."""
    risk_tier: RiskTier | None = None
    """Sets the fixer quorum (low 1, med 2, high 3)."""
    base_sha: str | None = None
    """Commit the candidates are written against."""
    delivery_mode: DeliveryMode | None = None
    """patch_first (default) or commit_first."""
    variant: str | None = None
    """Free-form variant label."""
    budget_tier: str | None = None
    """Free-form budget label."""
    allow_special: tuple[SpecialPath, ...] | None = None
    """Special kinds of path the unit may write (symlinks, gitlinks, git control files)."""
    estimate_seconds: float | None = attrs.field(default=None, validator=_check_estimate)
    """How long the step's unit is expected to take, in seconds (positive, finite); a hint
    for the order in which ready units are admitted, never a limit.

    .. versionadded:: 0.1.0
    """

    @property
    def objective(self) -> str:
        """The step text, else the title, else ``untitled-step``."""
        for text in (self.step, self.title):
            if text is not None and text.strip():
                return text
        return "untitled-step"


@attrs.frozen(kw_only=True)
class Plan:
    """
    A normalized ``update_plan`` plan.

    .. versionadded:: 0.1.0
    """

    steps: tuple[PlanStep, ...]
    """The steps in plan order (non-object entries of the input were skipped)."""
    explanation: str | None = None
    """The plan's optional explanation."""


@attrs.frozen(kw_only=True)
class Unit:
    """
    One atomic piece of plan work, as scheduled by the engine.

    .. versionadded:: 0.1.0
    """

    id: str
    """Unit id, ``unit-001`` style when sliced from a plan."""
    objective: str
    """What the unit must achieve."""
    unit_scope: str = "unknown"
    """What the unit is about."""
    write_scope: tuple[str, ...] = ("unknown",)
    """Path roots or globs the unit may change."""
    constraints: str = ""
    """Constraints the authors must respect."""
    invariants: str = ""
    """Invariants a candidate must preserve."""
    proof_command: str = ""
    """Shell command proving a candidate."""
    risk_tier: RiskTier = RiskTier.MED
    """Sets the fixer quorum."""
    deps: tuple[str, ...] = ()
    """Ids of units that must complete first."""
    base_sha: str = "HEAD"
    """Commit the candidates are written against."""
    delivery_mode: DeliveryMode = DeliveryMode.PATCH_FIRST
    """How the accepted candidate is delivered."""
    attempt: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Attempt number, starting at 1."""
    variant: str = "baseline"
    """Free-form variant label."""
    budget_tier: str = "unknown"
    """Free-form budget label."""
    allow_special: tuple[SpecialPath, ...] = ()
    """Special kinds of path the unit may write: symlinks, gitlinks, ``.gitattributes``,
    ``.gitmodules`` (none by default; the scope gate refuses them)."""
    estimate_seconds: float | None = attrs.field(default=None, validator=_check_estimate)
    """How long the unit is expected to take, in seconds (positive, finite; None: unknown).
    Only the order in which ready units are admitted may use it (the longest estimated
    path to the end of the plan first); it never limits or times the unit.

    .. versionadded:: 0.1.0
    """

    def to_document(self) -> dict[str, object]:
        """The unit as the ``slice`` command writes it (scope and attempt as strings)."""
        document: dict[str, object] = {
            "id": self.id,
            "objective": self.objective,
            "unit_scope": self.unit_scope,
            "write_scope": join_scope(self.write_scope),
            "constraints": self.constraints,
            "invariants": self.invariants,
            "proof_command": self.proof_command,
            "risk_tier": self.risk_tier.value,
            "deps": list(self.deps),
            "base_sha": self.base_sha,
            "delivery_mode": self.delivery_mode.value,
            "attempt": str(self.attempt),
            "variant": self.variant,
            "budget_tier": self.budget_tier,
        }
        # Only when set: the slice contract's document stays as it was for every other unit.
        if self.allow_special:
            document["allow_special"] = [kind.value for kind in self.allow_special]
        if self.estimate_seconds is not None:
            document["estimate_seconds"] = self.estimate_seconds
        return document


@attrs.frozen(kw_only=True)
class ProofEvidence:
    """
    What a proof (or an apply) ran and what it showed.

    .. versionadded:: 0.1.0
    """

    command: str
    """The command that ran."""
    key_line: str
    """The one output line that explains the outcome."""
    exit_code: int
    """The command's exit code."""


@attrs.frozen(kw_only=True)
class ReduceRecord:
    """
    A reducer's account of the simplification its candidate makes.

    .. versionadded:: 0.1.0
    """

    target_abstraction: str
    replacement_primitive: str
    complexity_delta: str
    invariants_preserved: tuple[str, ...]
    rollback_plan: str


@attrs.frozen(kw_only=True)
class WorkerResult:
    """
    A role adapter's result under output contract v2.

    Build it with `parse_worker_result`, which also enforces the lane rules.

    .. versionadded:: 0.1.0
    """

    id: str
    candidate_id: str
    triplet_index: int
    lane: Lane
    decision: Decision
    proof_status: ProofStatus
    write_scope: tuple[str, ...]
    risk_tier: RiskTier
    base_sha: str
    proof_attempts: int
    proof_evidence: ProofEvidence
    failure_code: FailureCode | None = None
    notes: str | None = None
    patch: str | None = None
    patch_sha256: str | None = None
    challenge_findings: tuple[str, ...] | None = None
    reduce_record: ReduceRecord | None = None
    lease_id: str | None = None
    ttl_ms: int | None = None
    worktree_path: str | None = None
    apply_evidence: ProofEvidence | None = None
    selected_candidate: str | None = None
    quorum_target: int | None = None
    quorum_observed: int | None = None
    artifact_ref: str | None = None
    scope_assertion: str | None = None


BATCH_COLUMNS: Final = (
    "id",
    "objective",
    "unit_scope",
    "write_scope",
    "constraints",
    "invariants",
    "proof_command",
    "risk_tier",
    "candidate_id",
    "triplet_index",
    "lane",
    "base_sha",
    "delivery_mode",
    "attempt",
    "variant",
    "budget_tier",
)
"""Columns of a batch CSV, in the order ``wave`` writes them."""

REQUIRED_BATCH_COLUMNS: Final = tuple(column for column in BATCH_COLUMNS if column != "base_sha")
"""The 15 columns a batch CSV must have (``base_sha`` defaults to HEAD)."""

OUTPUT_COLUMNS: Final = (
    "id",
    "candidate_id",
    "triplet_index",
    "lane",
    "decision",
    "proof_status",
    "write_scope",
    "risk_tier",
    "base_sha",
    "proof_attempts",
    "proof_evidence",
)
"""Columns of the ``run_csv`` output CSV."""


@attrs.frozen(kw_only=True)
class BatchRow:
    """
    One row of a streaming batch CSV (one candidate lane of one unit).

    Cells stay text, exactly as a spreadsheet or ``spawn_agents_on_csv`` sees them;
    only ``lane`` is checked against its closed vocabulary.

    .. versionadded:: 0.1.0
    """

    id: str
    objective: str
    unit_scope: str
    write_scope: str
    constraints: str
    invariants: str
    proof_command: str
    risk_tier: str
    candidate_id: str
    triplet_index: str
    lane: Lane
    base_sha: str
    delivery_mode: str
    attempt: str
    variant: str
    budget_tier: str

    def cells(self) -> tuple[str, ...]:
        """The row's cells in `BATCH_COLUMNS` order."""
        return tuple(str(getattr(self, column)) for column in BATCH_COLUMNS)


@attrs.frozen(kw_only=True)
class OutputRow:
    """
    One row of the ``run_csv`` output CSV: a queued candidate awaiting proof.

    .. versionadded:: 0.1.0
    """

    id: str
    candidate_id: str
    triplet_index: str
    lane: Lane
    write_scope: str
    risk_tier: str
    base_sha: str
    decision: str = "queued"
    proof_status: str = "pending"
    proof_attempts: int = 0
    proof_evidence: ProofEvidence = ProofEvidence(command="", key_line="", exit_code=0)

    def cells(self) -> tuple[str, ...]:
        """The row's cells in `OUTPUT_COLUMNS` order (evidence as compact JSON)."""
        evidence = json.dumps(attrs.asdict(self.proof_evidence), separators=(",", ":"))
        return (
            self.id,
            self.candidate_id,
            self.triplet_index,
            self.lane.value,
            self.decision,
            self.proof_status,
            self.write_scope,
            self.risk_tier,
            self.base_sha,
            str(self.proof_attempts),
            evidence,
        )


@attrs.frozen(kw_only=True)
class DepsRow:
    """
    One row of a deps CSV: a unit, what it waits for, and whether it leads interactively.

    .. versionadded:: 0.1.0
    """

    id: str
    depends_on: tuple[str, ...] = ()
    interactive_lead: bool = False


@attrs.frozen(kw_only=True)
class BudgetDecision:
    """
    The budget policy's decision: the one concurrency authority for a run.

    .. versionadded:: 0.1.0
    """

    remaining_five_hour: float
    remaining_weekly: float
    remaining_strict: float
    linear_start_threshold: float
    single_agent_threshold: float
    scaleout_threshold: float
    max_threads: int
    max_active_units: int
    mode: BudgetMode
    cas_scaleout_allowed: bool
    triplet_width: int
    triplet_degrade_reason: str
    triplet_restored: bool

    def to_document(self) -> dict[str, object]:
        """The ``budget`` command's JSON document."""
        return {"command": "budget", **_plain(self)}

    def to_text(self) -> str:
        """The ``budget --format text`` line."""
        return (
            f"mode={self.mode.value} strict_remaining={self.remaining_strict:.2f} "
            f"max_active_units={self.max_active_units} "
            f"cas_scaleout_allowed={str(self.cas_scaleout_allowed).lower()} "
            f"triplet_width={self.triplet_width} "
            f"triplet_degrade_reason={self.triplet_degrade_reason} "
            f"triplet_restored={str(self.triplet_restored).lower()}"
        )


@attrs.frozen(kw_only=True)
class ReplayResult:
    """
    A preflight simulation of how ready units split into waves under a budget.

    .. versionadded:: 0.1.0
    """

    mode: BudgetMode
    max_active_units: int
    triplet_width: int
    triplet_degrade_reason: str
    triplet_restored: bool
    ready_units: int
    wave_count: int
    waves: tuple[int, ...]
    rows_per_lane: tuple[int, ...]

    def to_document(self) -> dict[str, object]:
        """The ``replay`` command's JSON document."""
        return {"command": "replay", **_plain(self)}


@attrs.frozen(kw_only=True)
class PlanSummary:
    """
    Step counts of a plan by status.

    .. versionadded:: 0.1.0
    """

    total_steps: int
    pending: int
    in_progress: int
    completed: int
    other: int

    def to_document(self) -> dict[str, object]:
        """The ``plan_sync`` command's JSON document."""
        return {"command": "plan_sync", **_plain(self)}


@attrs.frozen(kw_only=True)
class SliceResult:
    """
    The units sliced from a plan, in plan order.

    .. versionadded:: 0.1.0
    """

    units: tuple[Unit, ...]

    @property
    def unit_count(self) -> int:
        """How many units were sliced."""
        return len(self.units)

    def to_document(self) -> dict[str, object]:
        """The ``slice`` command's JSON document."""
        return {
            "command": "slice",
            "units": [unit.to_document() for unit in self.units],
            "unit_count": self.unit_count,
        }


@attrs.frozen(kw_only=True)
class Wave:
    """
    One ready batch: W candidate rows for each selected unit.

    .. versionadded:: 0.1.0
    """

    lane: Lane
    triplet_width: int
    units_in: int
    units_selected: int
    rows: tuple[BatchRow, ...]

    def to_document(self, *, csv_path: str) -> dict[str, object]:
        """The ``wave`` command's JSON document, naming where the CSV was written."""
        return {
            "command": "wave",
            "lane": self.lane.value,
            "triplet_width": self.triplet_width,
            "units_in": self.units_in,
            "units_selected": self.units_selected,
            "rows_emitted": len(self.rows),
            "csv_path": csv_path,
        }


@attrs.frozen(kw_only=True)
class PreparedBatch:
    """
    A validated batch CSV, its output rows and the floor-gate verdict.

    .. versionadded:: 0.1.0
    """

    rows: tuple[BatchRow, ...]
    output_rows: tuple[OutputRow, ...]
    max_concurrency: int
    runnable_units: int
    effective_peak: int
    floor_threshold: int
    floor_applicable: bool
    floor_result: FloorResult
    deps_check_status: str

    def to_document(self, *, csv_path: str, output_csv_path: str) -> dict[str, object]:
        """The ``run_csv`` command's JSON document."""
        return {
            "command": "run_csv",
            "row_count": len(self.rows),
            "csv_path": csv_path,
            "output_csv_path": output_csv_path,
            "status": "prepared",
            "spawn_substrate": "spawn_agents_on_csv",
            "mesh_truth_verdict": True,
            "max_concurrency": self.max_concurrency,
            "runnable_units": self.runnable_units,
            "effective_peak": self.effective_peak,
            "floor_threshold": self.floor_threshold,
            "floor_applicable": self.floor_applicable,
            "floor_result": self.floor_result.value,
            "deps_check_status": self.deps_check_status,
        }


def _plain(record: attrs.AttrsInstance) -> dict[str, object]:
    """Field values in declaration order, enums as their values and tuples as lists."""
    document: dict[str, object] = {}
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "value"):
            value = value.value
        document[field.name] = value
    return document
