"""The plan a run works on: its units, and the update_plan state the integrator writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def with_completed(plan_state: dict[str, Any], steps: Sequence[int]) -> dict[str, Any]:
    """``plan_state`` with these steps marked completed (the steps are replaced, not changed)."""
    if not steps:
        return plan_state
    marked = list(plan_state["plan"])
    for index in steps:
        marked[index] = {**marked[index], "status": "completed"}
    return {**plan_state, "plan": marked}


def step_index(units: Sequence[Unit], plan: Plan | None) -> dict[str, int]:
    if plan is None:
        return {u.id: index for index, u in enumerate(units)}
    sliced = [i for i, step in enumerate(plan.steps) if step.status in {"pending", "in_progress"}]
    return {unit.id: sliced[index] for index, unit in enumerate(units)}
