"""The plan a run works on: its units, and the update_plan state the integrator writes."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, final

import attrs

from ..contracts._records import Plan, Unit
from ..planning._plan import (
    check_dependencies,
    check_plan,
    check_units,
    parse_plan,
    parse_units,
    slice_plan,
)


def plan_units(plan: Plan | Sequence[Unit] | object) -> tuple[tuple[Unit, ...], Plan | None]:
    # Every plan form is checked here, before anything runs: records built in
    # Python carry author text too, and attrs does not look at it.
    if isinstance(plan, Plan):
        check_plan(plan)
        return slice_plan(plan).units, plan
    if isinstance(plan, list | tuple) and plan and all(isinstance(u, Unit) for u in plan):
        units = tuple(plan)
        check_units(units)
        return units, None
    if isinstance(plan, Mapping) and "units" in plan:
        units = parse_units(plan)
        check_dependencies((u.id, u.deps, f"unit {u.id}") for u in units)
        return units, None
    parsed = parse_plan(plan)
    return slice_plan(parsed).units, parsed


def plan_document(plan: Plan | Sequence[Unit] | object) -> object:
    """The plan as JSON values (to keep in a run store, or a ledger event)."""
    if isinstance(plan, Plan):
        steps = [
            {key: value for key, value in attrs.asdict(step).items() if value is not None}
            for step in plan.steps
        ]
        return {"plan": steps} | ({"explanation": plan.explanation} if plan.explanation else {})
    if isinstance(plan, list | tuple) and plan and all(isinstance(u, Unit) for u in plan):
        return {"units": [unit.to_document() for unit in plan]}
    return plan


def initial_plan_state(units: Sequence[Unit], plan: Plan | None) -> dict[str, Any]:
    if plan is None:
        steps: list[dict[str, object]] = [
            {"id": u.id, "step": u.objective, "status": "pending"} for u in units
        ]
        return {"plan": steps}
    steps = [
        {
            k: v
            for k, v in (("id", s.id), ("step", s.objective), ("status", s.status))
            if v is not None
        }
        for s in plan.steps
    ]
    document: dict[str, object] = {"plan": steps}
    if plan.explanation is not None:
        document = {"explanation": plan.explanation, **document}
    return document


def with_completed(plan_state: Mapping[str, Any], steps: Iterable[int]) -> dict[str, Any]:
    """``plan_state`` with these steps marked completed (the steps are replaced, not changed)."""
    marked = list(plan_state["plan"])
    for index in steps:
        marked[index] = {**marked[index], "status": "completed"}
    return {**plan_state, "plan": marked}


@final
class CompletedStep(Mapping[str, Any]):
    """
    A plan state: a run's base state with the steps it delivered so far and one more.

    Every delivery hands the integrator the plan state with its unit's step
    completed; copying the step list each time would make a run quadratic in its
    plan. A state instead names the run's base state, its append-only list of
    delivered steps and how many of them it includes; it is written out (once)
    only if something reads it. Holding no state before it, it leaves nothing
    behind for the garbage collector when its delivery is done.
    """

    __slots__ = ("base", "delivered", "included", "step", "written")

    def __init__(
        self, base: Mapping[str, Any], delivered: Sequence[int], included: int, step: int
    ) -> None:
        self.base = base
        self.delivered = delivered
        """The run's delivered steps, in order; only appended to."""
        self.included = included
        """How many of ``delivered`` this state holds."""
        self.step = step
        self.written: dict[str, Any] | None = None
        """This state as a dict, once something read it."""

    def document(self) -> dict[str, Any]:
        """The plan state as its own dict (the same one on every call)."""
        if self.written is None:
            steps = itertools.chain(itertools.islice(self.delivered, self.included), (self.step,))
            self.written = with_completed(self.base, steps)
        return self.written

    def __getitem__(self, key: str) -> Any:  # noqa: ANN401 - a JSON value
        return self.document()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.document())

    def __len__(self) -> int:
        return len(self.document())

    def __repr__(self) -> str:
        return repr(self.document())


def step_index(units: Sequence[Unit], plan: Plan | None) -> dict[str, int]:
    if plan is None:
        return {u.id: index for index, u in enumerate(units)}
    sliced = [i for i, step in enumerate(plan.steps) if step.status in {"pending", "in_progress"}]
    return {unit.id: sliced[index] for index, unit in enumerate(units)}
