"""
Plan changes during a run: the new plan compared with the units the run has. Pure.

The plan is the source of truth: a change gives the whole new plan. Its units
keep the ids the run gave them (a plan's steps are matched by their ``id``;
a units document's units by theirs), new ones get fresh ids, and what the
run already started can no longer be edited.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

import attrs

from ..contracts._enums import StepStatus
from ..contracts._errors import PlanError
from ..contracts._records import Plan, Unit
from ..contracts._text import one_line
from ._plan_state import plan_units

__all__ = ["PlanChange", "UnitIds", "planned_change", "unit_ids_of"]

_SLICED: Final = frozenset({"pending", "in_progress"})
_STATUSES: Final = frozenset(status.value for status in StepStatus)
_NUMBERED: Final = re.compile(r"unit-(\d+)")

UnitIds = Mapping[str, str]
"""A plan's step ids, each with the id of the unit the run made of it."""


@attrs.frozen(kw_only=True)
class PlanChange:
    """
    What a plan change during a run changed (`Orchestrator.update_plan`).

    .. versionadded:: 0.2.0
    """

    units: tuple[Unit, ...]
    """The run's units after the change: the new plan's, then those that finished before
    and are no longer in it."""
    plan: Plan | None
    """The new plan (None: a units document or `Unit` records)."""
    step_of: Mapping[str, int]
    """Each unit's step index in the new plan's state."""
    unit_ids: UnitIds
    """The step id each unit of the plan was made of (empty without a plan)."""
    added: tuple[str, ...]
    """Units made of new steps."""
    edited: tuple[str, ...]
    """Units that had not started, with new text, scope, proof or dependencies."""
    removed: tuple[str, ...]
    """Units cancelled: left out of the new plan before they finished."""

    @property
    def changed(self) -> bool:
        """Whether the new plan changed anything."""
        return bool(self.added or self.edited or self.removed)


def unit_ids_of(units: Sequence[Unit], plan: Plan | None) -> dict[str, str]:
    """Step id → unit id, for the units sliced from ``plan`` (in order, as slicing numbers them)."""
    if plan is None:
        return {}
    sliced = [step for step in plan.steps if step.status in _SLICED]
    return {step.id: unit.id for step, unit in zip(sliced, units, strict=False) if step.id}


def planned_change(
    units: Sequence[Unit],
    plan: Plan | None,
    unit_ids: UnitIds,
    new: object,
    *,
    started: Collection[str],
    finished: Collection[str],
    completed: Collection[str] = (),
    delivering: Collection[str] = (),
    prepared: Callable[[Unit], Unit] = lambda unit: unit,
    used: Collection[str] = (),
    stopping: Collection[str] = (),
) -> PlanChange:
    """
    What ``new`` (a whole plan, in any form `Orchestrator.execute` takes) changes.

    Args:
        units: The run's units now.
        plan: The run's plan now (None: it runs units).
        unit_ids: Which unit each step of ``plan`` became.
        new: The whole new plan.
        started: Units that started (finished ones among them).
        finished: Units that finished.
        completed: Units that completed (a dependency on one may come or go: a plan
            marking its step completed drops it).
        delivering: Units whose delivery is under way (they cannot be cancelled).
        prepared: What the run does to each unit of a plan before it runs it
            (a default proof command, a delivery mode), so that a unit given
            again unchanged compares equal.
        used: Every unit id the run ever had: a new unit never takes one (a
            cancelled unit's events keep its id).
        stopping: Units cancelled by an earlier change whose calls are still
            stopping: given again, they are refused until they have.

    Raises:
        ValidationError, PlanError: The new plan is malformed, has a cycle, is
            of another kind than the run's, edits a unit that started, or
            cancels one whose delivery is under way.
    """
    _check_entries(new)
    sliced, new_plan = plan_units(new)
    if (plan is None) != (new_plan is None):
        raise PlanError(
            "a plan change gives a plan of the same kind as the run's: "
            + ("an update_plan payload" if plan is not None else "units")
        )
    renamed, ids = _stable_ids(sliced, new_plan, unit_ids, [*used, *(u.id for u in units)])
    current = {unit.id: unit for unit in units}
    problems: list[str] = []
    added: list[str] = []
    edited: list[str] = []
    kept: list[Unit] = []
    for unit in map(prepared, renamed):
        if unit.id in stopping:
            problems.append(f"unit {unit.id} is still stopping: give it again once it has")
        before = current.get(unit.id)
        if before is None:
            added.append(unit.id)
        elif _pending(before, completed) != _pending(unit, completed):
            if unit.id in started:
                problems.append(f"unit {unit.id} has started: it can no longer be edited")
            edited.append(unit.id)
        kept.append(unit)
    given = {unit.id for unit in kept}
    removed = [u.id for u in units if u.id not in given and u.id not in finished]
    problems += [
        f"unit {unit_id} is being delivered: it can no longer be cancelled"
        for unit_id in removed
        if unit_id in delivering
    ]
    if problems:
        raise PlanError("the plan change was refused: " + "; ".join(problems))
    kept += [u for u in units if u.id not in given and u.id in finished]
    return PlanChange(
        units=tuple(kept),
        plan=new_plan,
        step_of=_steps(kept, new_plan, ids),
        unit_ids=ids,
        added=tuple(added),
        edited=tuple(edited),
        removed=tuple(removed),
    )


def _check_entries(new: object) -> None:
    """
    Refuse what reading a plan leniently would skip: in a change, a skipped entry is a cancel.

    The helper commands skip entries that are not objects (and units without an id) and
    slice only known statuses; a change must not cancel a running unit for a typo.
    """
    entries: object = new
    if isinstance(new, Mapping):
        entries = next((new[key] for key in ("plan", "steps", "units") if key in new), None)
    if not isinstance(entries, list | tuple):
        return  # no list of entries: the plan's own checks say what is wrong
    problems = []
    for index, entry in enumerate(entries):
        if isinstance(entry, Unit):
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"entry {index} is not an object")
        elif "status" in entry and entry["status"] not in _STATUSES:
            problems.append(
                f"entry {index} has an unknown status {one_line(str(entry['status']))!r}"
            )
        elif isinstance(new, Mapping) and "units" in new and not isinstance(entry.get("id"), str):
            problems.append(f"entry {index} has no id")
    if problems:
        raise PlanError("the plan change was refused: " + "; ".join(problems))


def _pending(unit: Unit, completed: Collection[str]) -> Unit:
    """The unit, without its dependencies that completed (they no longer hold it back)."""
    return attrs.evolve(unit, deps=tuple(dep for dep in unit.deps if dep not in completed))


def _stable_ids(
    sliced: Sequence[Unit], plan: Plan | None, unit_ids: UnitIds, taken: Sequence[str]
) -> tuple[list[Unit], dict[str, str]]:
    """The new plan's units under the ids the run knows them by, and the step → unit map."""
    if plan is None:
        return list(sliced), {}
    steps = [step for step in plan.steps if step.status in _SLICED]
    if missing := [index for index, step in enumerate(plan.steps) if not step.id]:
        raise PlanError(
            "to change a plan during a run every step needs an id: "
            f"step {missing[0]} has none (its units are matched by their step's id)"
        )
    numbers = [int(found[1]) for name in taken if (found := _NUMBERED.fullmatch(name))]
    following = max(numbers, default=0) + 1
    rename: dict[str, str] = {}
    ids: dict[str, str] = {}
    for step, unit in zip(steps, sliced, strict=True):
        step_id = str(step.id)
        known = unit_ids.get(step_id)
        if known is None:
            known = f"unit-{following:03d}"
            following += 1
        rename[unit.id] = ids[step_id] = known
    renamed = [
        attrs.evolve(
            unit, id=rename[unit.id], deps=tuple(rename.get(dep, dep) for dep in unit.deps)
        )
        for unit in sliced
    ]
    return renamed, ids


def _steps(units: Sequence[Unit], plan: Plan | None, ids: Mapping[str, str]) -> dict[str, int]:
    """Each unit's step index in the plan state (units without a plan: their own order)."""
    if plan is None:
        return {unit.id: index for index, unit in enumerate(units)}
    index_of = {step.id: index for index, step in enumerate(plan.steps)}
    of_unit = {unit_id: index_of[step_id] for step_id, unit_id in ids.items()}
    # A unit that finished and left the plan keeps no step: it is not in the plan state.
    return {unit.id: of_unit[unit.id] for unit in units if unit.id in of_unit}


def describe(change: PlanChange) -> str:
    """One line saying what a change did (for people)."""
    parts = [
        f"{label} {', '.join(map(one_line, ids))}"
        for label, ids in (
            ("added", change.added),
            ("edited", change.edited),
            ("cancelled", change.removed),
        )
        if ids
    ]
    return "; ".join(parts) or "nothing changed"
