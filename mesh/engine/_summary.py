"""
Run summaries computed from ledger events. Pure: no I/O.

`MetricsCollector` is a sink that folds events into counters as they happen,
so a run's summary costs O(1) memory per event and can be rebuilt from any
stored event stream. `render_ledger` writes the prose "Orchestration Ledger"
with its fixed line order, leaving out everything that did not happen.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from ..contracts._enums import Decision, FailureCode, Lane
from ..contracts._events import LedgerEvent
from ..contracts._text import one_line

__all__ = [
    "MetricsCollector",
    "OutcomeState",
    "RunMetrics",
    "UnitOutcome",
    "pick_learning",
    "render_ledger",
    "stored_count",
    "unit_durations",
]

_LIST_LIMIT: Final = 10


class OutcomeState(enum.StrEnum):
    """
    How a unit ended: the closed vocabulary of `UnitOutcome.state`.

    Members are text, so ``outcome.state == "completed"`` holds, and ``COMPLETED``
    and ``FAILED`` equal the terminal `UnitState` members of the same name.

    .. versionadded:: 0.1.0
    """

    COMPLETED = "completed"
    """The integrator delivered the unit's accepted candidate."""
    FAILED = "failed"
    """A gate could not be met; the outcome carries exactly one failure code."""
    BLOCKED = "blocked"
    """Never started: a dependency did not complete (``blocked_by`` names it)."""


@attrs.frozen(kw_only=True)
class UnitOutcome:
    """
    How one unit ended.

    .. versionadded:: 0.1.0
    """

    unit_id: str
    state: OutcomeState
    """Completed, failed, or blocked (a dependency did not complete)."""
    attempts: int = 0
    failure_code: FailureCode | None = None
    evidence: str = ""
    """Every problem the unit met, each once, ``first | second``: a failed unit's own
    reason first, then the others in the order met (invalid answers, adapter errors,
    rejects, refused or failed candidates, rework). At most ten problems of 500
    characters each are written out; the rest are counted. Empty when nothing went wrong."""
    accepted_candidate: str | None = None
    artifact_ref: str | None = None
    delivery: Decision | None = None
    blocked_by: str | None = None


@attrs.frozen(kw_only=True)
class RunMetrics:
    """
    Counters and phase metrics of a run.

    .. versionadded:: 0.1.0
    """

    units_total: int = 0
    completed: int = 0
    failed: int = 0
    blocked: int = 0
    elapsed_seconds: float = 0.0
    units_per_hour: float = 0.0
    proof_runs: int = 0
    proof_failures: int = 0
    proof_fail_rate: float = 0.0
    author_results: int = 0
    rejects: int = 0
    reject_rate: float = 0.0
    lease_requests: int = 0
    scope_conflict_requeues: int = 0
    scope_conflict_requeue_rate: float = 0.0
    adapter_calls: tuple[tuple[str, int], ...] = ()
    """Calls per lane, in lane order."""
    invalid_outputs: int = 0
    adapter_errors: int = 0
    timeouts: int = 0
    timeout_retries: int = 0
    replacements: int = 0
    proof_retries: int = 0
    reworks: int = 0
    peak_in_flight: int = 0
    target: int = 0
    targets_seen: tuple[int, ...] = ()
    budget_mode: str = ""
    strict_remaining: float = 0.0
    backpressure_events: int = 0
    lowest_limit: int = 0
    restores: int = 0
    cas_instances: int = 0
    """Distinct worker instances (e.g. Ray nodes) that answered calls."""
    executor: str = ""
    """The executor that ran calls elsewhere (``ray``), or "" when every call ran in-process."""
    executor_slots: tuple[int, ...] = ()
    """The executor's slot counts over the run, as the scale-out gate set them."""


_MOST: Final = 1_000_000_000
"""The largest count (units, a target, a limit) read from an event: more is damage."""


def stored_count(value: object) -> int | None:
    """A count an event records (units, a target, a limit), or None when it is not one."""
    return value if type(value) is int and 0 <= value <= _MOST else None


def _percent(value: object) -> float:
    # NaN, infinities and huge integers fail the comparison (no conversion to overflow).
    if isinstance(value, int | float) and not isinstance(value, bool) and -_MOST <= value <= _MOST:
        return float(value)
    return 0.0


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


_AUTHOR_LANES: Final = frozenset({Lane.CODER, Lane.REDUCER})
_COUNTED_ONLY: Final = frozenset(
    {"unit_transition", "candidates_recorded", "proofs_recorded", "delivery_started"}
)
_OUTCOME_KEYS: Final[dict[str, str]] = {
    outcome: f"outcome:{outcome}" for outcome in ("ok", "error", "timeout", "invalid_output_schema")
}


class MetricsCollector:
    """A ledger sink that folds events into `RunMetrics` as they arrive."""

    def __init__(self) -> None:
        self._calls: Counter[Lane] = Counter()
        self._counts: Counter[str] = Counter()
        self._targets: list[int] = []
        self._in_flight = 0
        self._peak = 0
        self._lowest_limit = 0
        self._mode = ""
        self._strict = 0.0
        self._started: float | None = None
        self._finished: float | None = None
        self._units_total = 0
        self._instances: set[str] = set()
        self._executor = ""
        self._slots: list[int] = []

    def emit(self, event: LedgerEvent) -> None:  # noqa: C901, PLR0912 - one branch per event kind
        """Fold one event in."""
        name, data, counts = event.event, event.data, self._counts
        if name == "adapter_call" and event.lane is not None:
            self._fold_call(event.lane, data)
        elif name in _COUNTED_ONLY:  # the commonest events after calls: counted, nothing else
            counts[name] += 1
        elif name in {"executor_started", "executor_slots"}:
            self._executor = str(data.get("executor", self._executor))
            slots = data.get("slots")
            if isinstance(slots, int) and (not self._slots or self._slots[-1] != slots):
                self._slots.append(slots)
        elif name == "unit_started":
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        elif name == "unit_finished":
            self._in_flight -= 1
            counts[f"finished:{data.get('state')}"] += 1
        elif name == "budget_read":
            # A stored ledger may hold anything here: what is no count or number is left out.
            target = stored_count(data.get("target", 0))
            if target is not None and (not self._targets or self._targets[-1] != target):
                self._targets.append(target)
            self._mode = str(data.get("mode", ""))
            self._strict = _percent(data.get("strict_remaining", 0.0))
        elif name == "concurrency_changed":
            limit = stored_count(data.get("limit", 0))
            if data.get("reason") == "backpressure":
                counts["backpressure"] += 1
                if limit is not None:
                    self._lowest_limit = min(self._lowest_limit or limit, limit)
            elif data.get("reason") == "restored":
                counts["restores"] += 1
        elif name in {"run_started", "run_resumed"}:
            # A resumed run keeps its first start; the units in flight then died with the process.
            self._started = event.at if self._started is None else self._started
            self._units_total = stored_count(data.get("units", 0)) or 0
            self._in_flight = 0
        elif name == "run_finished":
            self._finished = event.at
        else:
            counts[name] += 1

    def _fold_call(self, lane: Lane, data: Mapping[str, object]) -> None:
        # The commonest event by far: one lookup per fact, no set or text built.
        counts = self._counts
        self._calls[lane] += 1
        outcome = data.get("outcome")
        # A stored ledger may hold anything here: only text is looked up.
        known = _OUTCOME_KEYS.get(outcome) if type(outcome) is str else None
        counts[known or f"outcome:{outcome}"] += 1
        ok = outcome == "ok"
        if ok and lane in _AUTHOR_LANES:
            counts["author_results"] += 1
            counts["rejects"] += data.get("decision") == Decision.REJECT
        elif ok and lane is Lane.PROVER:
            counts["proof_runs"] += 1
            counts["proof_failures"] += data.get("decision") == Decision.FAIL
        elif lane is Lane.LOCKSMITH and data.get("action") == "acquire":
            counts["lease_requests"] += ok
        where = data.get("where")
        if where is not None:
            self._instances.add(str(where))

    def metrics(self) -> RunMetrics:
        """The metrics so far."""
        counts = self._counts
        elapsed = (
            (self._finished or 0.0) - (self._started or 0.0) if self._started is not None else 0.0
        )
        elapsed = max(0.0, elapsed)
        completed = counts["finished:completed"]
        return RunMetrics(
            units_total=self._units_total,
            completed=completed,
            failed=counts["finished:failed"],
            blocked=counts["unit_blocked"],
            elapsed_seconds=elapsed,
            units_per_hour=completed * 3600 / elapsed if elapsed > 0 else 0.0,
            proof_runs=counts["proof_runs"],
            proof_failures=counts["proof_failures"],
            proof_fail_rate=_rate(counts["proof_failures"], counts["proof_runs"]),
            author_results=counts["author_results"],
            rejects=counts["rejects"],
            reject_rate=_rate(counts["rejects"], counts["author_results"]),
            lease_requests=counts["lease_requests"],
            scope_conflict_requeues=counts["lease_denied"],
            scope_conflict_requeue_rate=_rate(counts["lease_denied"], counts["lease_requests"]),
            adapter_calls=tuple(
                (lane.value, self._calls[lane]) for lane in Lane if self._calls[lane]
            ),
            invalid_outputs=counts["outcome:invalid_output_schema"],
            adapter_errors=counts["outcome:error"],
            timeouts=counts["outcome:timeout"],
            timeout_retries=counts["adapter_retry"],
            replacements=counts["adapter_replacement"],
            proof_retries=counts["proof_retry"],
            reworks=counts["rework"],
            peak_in_flight=self._peak,
            target=self._targets[0] if self._targets else 0,
            targets_seen=tuple(self._targets),
            budget_mode=self._mode,
            strict_remaining=self._strict,
            backpressure_events=counts["backpressure"],
            lowest_limit=self._lowest_limit,
            restores=counts["restores"],
            cas_instances=len(self._instances),
            executor=self._executor,
            executor_slots=tuple(self._slots),
        )


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return f"{shown} and {more} more" if more > 0 else shown


def _instances_line(metrics: RunMetrics) -> str:
    line = f"CAS instances: {_plural(metrics.cas_instances, 'worker instance')} in use"
    if metrics.executor:
        slots = " → ".join(map(str, metrics.executor_slots))
        line += f" ({one_line(metrics.executor)} executor{', slots ' + slots if slots else ''})"
    return line + "."


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def render_ledger(metrics: RunMetrics, outcomes: Sequence[UnitOutcome]) -> str:  # noqa: C901 - one clause per ledger line
    """
    The prose "Orchestration Ledger" of a run; empty when nothing ran.

    Lines, in this order, each left out when empty: Skills used, Wave summary,
    Subagents, Budget and scaling, CAS instances, Retry/replacement events,
    Delivery/join status. Text that came from events (unit ids, the budget
    mode, the executor's name) is printed through `one_line`, so no value
    can add a line or rewrite one on a terminal.

    .. versionadded:: 0.1.0
    """
    if not metrics.adapter_calls and not outcomes:
        return ""
    lines = ["Orchestration Ledger"]
    calls = ", ".join(f"{lane} x{count}" for lane, count in metrics.adapter_calls)
    lines.append(f"Skills used: mesh streaming orchestration{f' with {calls}' if calls else ''}.")
    lines.append(
        f"Wave summary: {_plural(len(outcomes), 'unit')} streamed with no wave barrier: "
        f"{metrics.completed} completed, {metrics.failed} failed, {metrics.blocked} blocked; "
        f"peak {metrics.peak_in_flight} in flight; {metrics.units_per_hour:.1f} units/hour, "
        f"proof fail rate {metrics.proof_fail_rate:.0%}, reject rate {metrics.reject_rate:.0%}, "
        f"scope-conflict requeue rate {metrics.scope_conflict_requeue_rate:.0%}."
    )
    total_calls = sum(count for _, count in metrics.adapter_calls)
    if total_calls:
        extras = []
        if metrics.invalid_outputs:
            extras.append(f"{_plural(metrics.invalid_outputs, 'invalid_output_schema result')}")
        if metrics.adapter_errors:
            extras.append(f"{_plural(metrics.adapter_errors, 'adapter error')}")
        if metrics.timeouts:
            extras.append(f"{_plural(metrics.timeouts, 'timeout')}")
        tail = f"; {', '.join(extras)}" if extras else ""
        lines.append(f"Subagents: {_plural(total_calls, 'adapter call')}{tail}.")
    if metrics.targets_seen:
        budget = (
            f"Budget and scaling: active-unit target {metrics.target} "
            f"({one_line(metrics.budget_mode)}, "
            f"strict remaining {metrics.strict_remaining:.1f}%)"
        )
        if len(metrics.targets_seen) > 1:
            budget += (
                f"; re-read budget moved it to {', '.join(map(str, metrics.targets_seen[1:]))}"
            )
        if metrics.backpressure_events:
            budget += (
                f"; backpressure lowered the limit {_plural(metrics.backpressure_events, 'time')} "
                f"(lowest {metrics.lowest_limit})"
            )
        if metrics.restores:
            budget += f" and restored it {_plural(metrics.restores, 'time')}"
        lines.append(budget + ".")
    if metrics.cas_instances or metrics.executor:
        lines.append(_instances_line(metrics))
    retries = [
        _plural(count, *nouns)
        for count, *nouns in (
            (metrics.timeout_retries, "timeout retry", "timeout retries"),
            (metrics.replacements, "replacement"),
            (metrics.proof_retries, "proof retry", "proof retries"),
            (metrics.scope_conflict_requeues, "scope-conflict requeue"),
            (metrics.reworks, "rework"),
        )
        if count
    ]
    if retries:
        lines.append(f"Retry/replacement events: {', '.join(retries)}.")
    delivery = _delivery_line(outcomes)
    if delivery:
        lines.append(delivery)
    return "\n".join(lines) + "\n"


def _delivery_line(outcomes: Sequence[UnitOutcome]) -> str:
    parts = []
    delivered = [
        f"{one_line(o.unit_id)} as "
        f"{'commit' if o.delivery is Decision.INTEGRATED_COMMIT else 'patch'}"
        for o in outcomes
        if o.state == OutcomeState.COMPLETED
    ]
    if delivered:
        parts.append(f"{len(delivered)} delivered ({_listing(delivered)})")
    failed = [
        f"{one_line(o.unit_id)} ({o.failure_code.value if o.failure_code else 'unknown'})"
        for o in outcomes
        if o.state == OutcomeState.FAILED
    ]
    if failed:
        parts.append(f"failed: {_listing(failed)}")
    blocked = [
        f"{one_line(o.unit_id)} by {one_line(str(o.blocked_by))}"
        for o in outcomes
        if o.state == OutcomeState.BLOCKED
    ]
    if blocked:
        parts.append(f"blocked: {_listing(blocked)}")
    return f"Delivery/join status: {'; '.join(parts)}." if parts else ""


def unit_durations(events: Iterable[LedgerEvent]) -> dict[str, float]:
    """
    How long each unit that completed took, in seconds, by unit id: estimates for a next run.

    A unit's time runs from its last ``unit_started`` to its ``unit_finished`` as
    completed, on the run's clock; a unit restarted by a resume counts from its
    restart. Units that failed, were blocked or never finished are left out.

    >>> from mesh import LedgerEvent
    >>> events = [
    ...     LedgerEvent(event="unit_started", run_id="r", seq=1, at=10.0, unit_id="u1"),
    ...     LedgerEvent(event="unit_finished", run_id="r", seq=2, at=70.0, unit_id="u1",
    ...                 data={"state": "completed"}),
    ... ]
    >>> unit_durations(events)
    {'u1': 60.0}

    .. versionadded:: 0.1.0
    """
    started: dict[str, float] = {}
    durations: dict[str, float] = {}
    for event in events:
        if event.unit_id is None:
            continue
        if event.event == "unit_started":
            started[event.unit_id] = event.at
        elif event.event == "unit_finished" and event.data.get("state") == "completed":
            began = started.get(event.unit_id)
            if began is not None and event.at > began:
                durations[event.unit_id] = event.at - began
    return durations


def pick_learning(metrics: RunMetrics, outcomes: Sequence[UnitOutcome]) -> str | None:
    """
    One reusable lesson from a run, or None when nothing ran.

    .. versionadded:: 0.1.0
    """
    if not outcomes:
        return None
    codes = Counter(o.failure_code.value for o in outcomes if o.failure_code is not None)
    if metrics.scope_conflict_requeue_rate > 0.2:  # noqa: PLR2004 - a fifth of lease requests
        return (
            f"Overlapping write scopes caused {metrics.scope_conflict_requeues} requeues "
            f"({metrics.scope_conflict_requeue_rate:.0%} of lease requests): "
            "split scopes more narrowly."
        )
    if metrics.timeouts:
        return (
            f"{_plural(metrics.timeouts, 'adapter call')} timed out: raise the call timeout "
            "or lower the budget target."
        )
    if metrics.proof_fail_rate > 0.3:  # noqa: PLR2004 - roughly one candidate in three
        return (
            f"Proofs failed for {metrics.proof_fail_rate:.0%} of candidates: tighten objectives "
            "or make proof commands narrower."
        )
    if codes:
        code, count = codes.most_common(1)[0]
        return f"{_plural(count, 'unit')} failed with {code}: address that first."
    return (
        f"All {_plural(metrics.completed, 'unit')} completed at target {metrics.target} "
        f"({one_line(metrics.budget_mode)}); this plan shape streams cleanly."
    )
