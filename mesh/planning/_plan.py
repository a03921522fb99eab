"""Plan normalization, dependency validation and slicing into units. Pure: no I/O."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from ..contracts._convert import structure, type_name
from ..contracts._enums import StepStatus
from ..contracts._errors import InputError, PlanError, ValidationError
from ..contracts._gate import path_problem
from ..contracts._records import (
    SCOPE_SEPARATOR,
    Plan,
    PlanStep,
    PlanSummary,
    SliceResult,
    Unit,
    estimate_problem,
    split_scope,
)
from ..contracts._scopes import is_whole_tree, normalize_path
from ..contracts._text import TextLevel, one_line, text_problem

__all__ = [
    "check_dependencies",
    "check_plan",
    "check_units",
    "parse_plan",
    "parse_units",
    "plan_sync",
    "slice_plan",
]

_SLICED: Final = frozenset({StepStatus.PENDING.value, StepStatus.IN_PROGRESS.value})
_PLAN_KEYS: Final = frozenset({"plan", "steps", "explanation"})
_UNIT_DEFAULTS: Final = Unit(id="-", objective="-")
# A units document is what `slice` writes: its own bookkeeping keys are allowed back in.
_UNITS_DOCUMENT_KEYS: Final = frozenset({"units", "unit_count", "command"})

_STRICT: Final = TextLevel.STRICT
_PROSE: Final = TextLevel.PROSE
# Authors write these fields; each is checked where it is read, at its level.
# Everything else is a number or a closed vocabulary, which the parsers check.
_STEP_TEXT: Final = {
    "step": _STRICT,
    "title": _STRICT,
    "status": _STRICT,
    "id": _STRICT,
    "deps": _STRICT,
    "unit_scope": _STRICT,
    "write_scope": _STRICT,
    "constraints": _PROSE,
    "invariants": _PROSE,
    "proof_command": _STRICT,
    "base_sha": _STRICT,
    "variant": _STRICT,
    "budget_tier": _STRICT,
}
_UNIT_TEXT: Final = {
    "id": _STRICT,
    "objective": _STRICT,
    **{key: level for key, level in _STEP_TEXT.items() if key not in {"step", "title", "status"}},
}
_EMPTY_SCOPE: Final = "must name at least one path; leave write_scope out to allow the whole tree"
_BLANK_ROOT: Final = "must not be blank; name a path or remove the entry"
_ID_IN_PATH: Final = 80
"""How much of a unit's id a problem's path shows: the id itself may be the hostile text."""


def _text_problems(
    entry: Mapping[str, object], path: str, levels: Mapping[str, TextLevel]
) -> list[str]:
    """Every forbidden character and empty write scope in an entry's text fields."""
    problems: list[str] = []
    # Paths are written only for a problem: most plans have none, and many texts.
    for key, value in entry.items():
        level = levels.get(key)
        if level is None:
            continue
        if key == "write_scope":
            problems += _scope_problems(value, f"{path}.{key}")
        if isinstance(value, str):
            if problem := text_problem(value, level):
                problems.append(f"{path}.{key}: {problem}")
        elif isinstance(value, list | tuple):
            problems += [
                f"{path}.{key}[{index}]: {problem}"
                for index, text in enumerate(value)
                if isinstance(text, str) and (problem := text_problem(text, level))
            ]
        # Any other type is wrong: the parser reports it.
    return problems


def _texts_clean(record: object, levels: Mapping[str, TextLevel]) -> bool:
    """
    Whether no text field of ``record`` holds a character its level forbids.

    The texts of each level are searched as one: joined by a character that level
    allows, so the join adds nothing to find. Anything but text and tuples of
    text is left to the field-by-field check (False).
    """
    strict: list[str] = []
    prose: list[str] = []
    for key, level in levels.items():
        value = getattr(record, key, None)
        texts = strict if level is _STRICT else prose  # by identity: enum hashing is slow
        if type(value) is str:
            texts.append(value)
        elif type(value) is tuple and all(type(item) is str for item in value):
            texts.extend(value)
        else:
            return False
    return text_problem(" ".join(strict)) is None and text_problem("\n".join(prose), _PROSE) is None


def _scope_problems(scope: object, path: str) -> list[str]:
    # An explicitly empty scope must not fall back to the default, which is the
    # whole tree: an author who wrote [] or "" meant "nothing", not "everything".
    if isinstance(scope, str):
        named = any(root.strip() for root in scope.split(SCOPE_SEPARATOR))
        if not named:
            return [f"{path}: {_EMPTY_SCOPE}"]
        roots = split_scope(scope)
        return [f"{path}: {problem}" for problem in map(_root_problem, roots) if problem]
    if not isinstance(scope, list | tuple):
        return []
    blank = [i for i, root in enumerate(scope) if isinstance(root, str) and not root.strip()]
    if len(blank) == len(scope):
        return [f"{path}: {_EMPTY_SCOPE}"]
    # A blank root among real ones would mean the whole tree (see _scopes).
    problems = [f"{path}[{i}]: {_BLANK_ROOT}" for i in blank]
    for index, root in enumerate(scope):
        if isinstance(root, str) and root.strip() and (problem := _root_problem(root)):
            problems.append(f"{path}[{index}]: {problem}")
    return problems


def _root_problem(root: str) -> str | None:
    """Why a write-scope root names what no candidate may ever write (None: it may)."""
    text = root.strip()
    if text_problem(text) is not None:
        return None  # reported on its own
    # Before the whole-tree spellings: "/" and "\\" normalize to "" but are absolute.
    if text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        return f"'{one_line(root)}' is an absolute path"
    if is_whole_tree(text):
        return None
    problem = path_problem(normalize_path(text))
    return None if problem is None else f"'{one_line(root)}' {problem}"


def _without_bad_estimate(
    entry: dict[str, object], path: str
) -> tuple[dict[str, object], list[str]]:
    """
    The entry, minus an ``estimate_seconds`` number that is not a positive finite one.

    Such a number has the right JSON type, so the converter would hand it to the
    record, whose validator raises a bare ValueError; reporting it here keeps it
    a path-addressed problem beside the entry's others. Wrong types stay for
    the converter to report.
    """
    value = entry.get("estimate_seconds")
    problem = estimate_problem(value)
    if problem is None or isinstance(value, bool) or not isinstance(value, int | float):
        return entry, []
    rest = {key: item for key, item in entry.items() if key != "estimate_seconds"}
    return rest, [f"{path}.estimate_seconds: {problem}"]


def _fields(record: attrs.AttrsInstance) -> dict[str, object]:
    return {field.name: getattr(record, field.name) for field in attrs.fields(type(record))}


def _normalize_scope(entry: dict[str, object]) -> dict[str, object]:
    # A scope may be written as one string ("src/a;src/b") or as an array of roots.
    scope = entry.get("write_scope")
    if isinstance(scope, str):
        return {**entry, "write_scope": list(split_scope(scope))}
    return entry


def _steps_payload(payload: object) -> tuple[str, Sequence[object], str | None]:
    """Find the step list in any accepted plan shape: (JSON path, steps, explanation)."""
    if isinstance(payload, list):
        return "$", payload, None
    if not isinstance(payload, Mapping):
        raise ValidationError(
            "plan", [f"$: expected an array of steps or an object, got {type_name(payload)}"]
        )
    unknown = sorted(set(payload) - _PLAN_KEYS)
    problems = [f"$: unknown key {key!r}" for key in unknown]
    if "plan" in payload and "steps" in payload:
        problems.append("$: give either 'plan' or 'steps', not both")
    key = "plan" if "plan" in payload else "steps"
    if key not in payload:
        problems.append("$: expected key 'plan' (or 'steps') holding an array of steps")
    elif not isinstance(payload[key], list):
        problems.append(f"$.{key}: expected array, got {type_name(payload[key])}")
    explanation = payload.get("explanation")
    if explanation is not None and not isinstance(explanation, str):
        problems.append(f"$.explanation: expected string, got {type_name(explanation)}")
    if problems:
        raise ValidationError("plan", problems)
    return f"$.{key}", payload[key], explanation


def parse_plan(payload: object) -> Plan:
    """
    Parse an ``update_plan`` payload strictly and validate its dependencies.

    Accepted shapes: an array of steps; an object with ``plan`` (update_plan,
    optional ``explanation``); an object with ``steps``. Non-object entries in the
    step list are skipped, as ``update_plan`` consumers always have. Every other
    problem is an error: wrong types and unknown keys (each with its JSON path),
    control characters, line separators, bidi controls or lone surrogates in
    text (tab and newline are allowed in ``constraints``, ``invariants`` and
    ``explanation`` only), an explicitly empty ``write_scope`` (leave it out
    for the whole tree), an ``estimate_seconds`` that is not a positive, finite
    number, duplicate step ids, dependencies on unknown ids, and dependency
    cycles.

    Raises:
        ValidationError: Listing every type, key and shape problem.
        PlanError: On duplicate ids, unknown dependencies or cycles.

    .. versionadded:: 0.1.0
    """
    base, entries, explanation = _steps_payload(payload)
    steps: list[PlanStep] = []
    paths: list[str] = []
    problems = _text_problems({"explanation": explanation}, "$", {"explanation": _PROSE})
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        path = f"{base}[{index}]"
        checked, estimate = _without_bad_estimate(entry, path)
        problems += estimate
        try:
            steps.append(structure(_normalize_scope(checked), PlanStep, subject="plan", path=path))
            paths.append(path)
        except ValidationError as exc:
            problems.extend(exc.problems)
        problems += _text_problems(entry, path, _STEP_TEXT)
    if problems:
        raise ValidationError("plan", problems)
    check_dependencies((step.id, step.deps, path) for step, path in zip(steps, paths, strict=True))
    return Plan(steps=tuple(steps), explanation=explanation)


def check_dependencies(nodes: Iterable[tuple[str | None, Sequence[str], str]]) -> None:
    """
    Check that ids are unique, every dependency names a known id, and there is no cycle.

    Args:
        nodes: ``(id or None, dependency ids, JSON path)`` per node; nodes without
            an id can depend on others but cannot be depended on.

    Raises:
        PlanError: Naming the first duplicate, every unknown id, or one cycle.

    .. versionadded:: 0.1.0
    """
    listed = list(nodes)
    seen: dict[str, str] = {}
    for node_id, _, path in listed:
        if node_id is None:
            continue
        if node_id in seen:
            raise PlanError(f"{path}: duplicate id {node_id!r} (first at {seen[node_id]})")
        seen[node_id] = path
    unknown = [
        f"{path}: depends on unknown id {dep!r}"
        for _, deps, path in listed
        for dep in deps
        if dep not in seen
    ]
    if unknown:
        raise PlanError("; ".join(unknown))
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for node_id, deps, _ in listed:
        if node_id is not None:
            sorter.add(node_id, *deps)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = tuple(str(node) for node in exc.args[1])
        raise PlanError(f"dependency cycle: {' -> '.join(cycle)}", cycle=cycle) from None


def _as_plan(plan: Plan | object) -> Plan:
    return plan if isinstance(plan, Plan) else parse_plan(plan)


def plan_sync(plan: Plan | object) -> PlanSummary:
    """
    Count a plan's steps by status (absent = pending; unknown statuses count as other).

    Args:
        plan: A `Plan`, or a payload `parse_plan` accepts.

    .. versionadded:: 0.1.0
    """
    parsed = _as_plan(plan)
    counts = dict.fromkeys(StepStatus, 0)
    for step in parsed.steps:
        status = step.status if step.status in StepStatus.__members__.values() else "other"
        counts[StepStatus(status)] += 1
    return PlanSummary(
        total_steps=len(parsed.steps),
        pending=counts[StepStatus.PENDING],
        in_progress=counts[StepStatus.IN_PROGRESS],
        completed=counts[StepStatus.COMPLETED],
        other=counts[StepStatus.OTHER],
    )


def slice_plan(plan: Plan | object, *, max_slices: int | None = None) -> SliceResult:
    """
    Slice every pending or in-progress step into a unit, in plan order.

    Units are numbered ``unit-001``, ``unit-002``, ... Dependencies on completed
    steps are satisfied and dropped; dependencies on steps that become units are
    rewritten to those unit ids. A dependency on a step that is neither (for
    example ``blocked``) keeps the unit waiting, so it is kept as the step id.
    ``max_slices`` keeps only the first N units; their dependencies on cut units
    are kept, so those units stay waiting. A step's ``estimate_seconds`` is
    carried to its unit.

    Raises:
        ValidationError, PlanError: As `parse_plan`.
        InputError: When ``max_slices`` is negative.

    .. versionadded:: 0.1.0
    """
    if max_slices is not None and (isinstance(max_slices, bool) or max_slices < 0):
        raise InputError(f"max_slices must be >= 0, got {max_slices!r}")
    parsed = _as_plan(plan)
    sliced = [step for step in parsed.steps if step.status in _SLICED]
    unit_ids = {id(step): f"unit-{number:03d}" for number, step in enumerate(sliced, start=1)}
    by_step_id = {step.id: step for step in parsed.steps if step.id is not None}

    def unit_deps(step: PlanStep) -> tuple[str, ...]:
        deps: list[str] = []
        for dep in step.deps:
            target = by_step_id[dep]
            if target.status == StepStatus.COMPLETED:
                continue
            deps.append(unit_ids.get(id(target), dep))
        return tuple(dict.fromkeys(deps))

    units = tuple(
        _unit_from_step(step, unit_ids[id(step)], unit_deps(step))
        for step in sliced[: max_slices if max_slices is not None else len(sliced)]
    )
    return SliceResult(units=units)


def _unit_from_step(step: PlanStep, unit_id: str, deps: tuple[str, ...]) -> Unit:
    defaults = _UNIT_DEFAULTS
    return Unit(
        id=unit_id,
        objective=step.objective,
        unit_scope=step.unit_scope if step.unit_scope is not None else defaults.unit_scope,
        write_scope=step.write_scope or defaults.write_scope,
        constraints=step.constraints if step.constraints is not None else defaults.constraints,
        invariants=step.invariants if step.invariants is not None else defaults.invariants,
        proof_command=(
            step.proof_command if step.proof_command is not None else defaults.proof_command
        ),
        risk_tier=step.risk_tier or defaults.risk_tier,
        deps=deps,
        base_sha=step.base_sha if step.base_sha is not None else defaults.base_sha,
        delivery_mode=step.delivery_mode or defaults.delivery_mode,
        variant=step.variant if step.variant is not None else defaults.variant,
        budget_tier=step.budget_tier if step.budget_tier is not None else defaults.budget_tier,
        allow_special=step.allow_special or defaults.allow_special,
        estimate_seconds=step.estimate_seconds,
    )


def parse_units(payload: object) -> tuple[Unit, ...]:
    """
    Parse a units document (``{"units": [...]}``, as ``slice`` writes it).

    Entries that are not objects, or have no string ``id``, are skipped (the
    helper CLI's contract); every other entry is parsed strictly, its text as
    `parse_plan` checks it. ``write_scope`` may be a ``;``-separated string or
    an array, but not an empty one; ``attempt`` a number or a numeric string;
    ``estimate_seconds``, when present, a positive, finite number.
    Missing fields take the `Unit` defaults; a missing objective is
    ``untitled-step``.

    Raises:
        ValidationError: Listing every problem with its JSON path.

    .. versionadded:: 0.1.0
    """
    if not isinstance(payload, Mapping):
        raise ValidationError("units", [f"$: expected object, got {type_name(payload)}"])
    extra = sorted(set(payload) - _UNITS_DOCUMENT_KEYS)
    problems = [f"$: unknown key {key!r}" for key in extra]
    entries = payload.get("units")
    if not isinstance(entries, list):
        problems.append(f"$.units: expected array, got {type_name(entries)}")
        raise ValidationError("units", problems)
    units: list[Unit] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        path = f"$.units[{index}]"
        problems += _text_problems(entry, path, _UNIT_TEXT)
        checked, estimate = _without_bad_estimate(entry, path)
        problems += estimate
        normalized = _normalize_scope({"objective": "untitled-step", **checked})
        attempt = normalized.get("attempt", 1)
        if isinstance(attempt, str) and attempt.isascii() and attempt.isdigit():
            attempt = normalized["attempt"] = int(attempt)
        if isinstance(attempt, str) or (isinstance(attempt, int) and attempt < 1):
            problems.append(f"{path}.attempt: expected a whole number >= 1, got {attempt!r}")
            continue
        try:
            units.append(structure(normalized, Unit, subject="units", path=path))
        except ValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ValidationError("units", problems)
    return tuple(units)


def check_units(units: Sequence[Unit]) -> None:
    """
    Check `Unit` records built in Python as `parse_units` checks a units document.

    Problems are addressed as ``unit u1.objective``; dependencies are then
    checked as `check_dependencies` does.

    Raises:
        ValidationError: Listing every forbidden character and empty write scope.
        PlanError: On duplicate ids, unknown dependencies or cycles.

    .. versionadded:: 0.1.0
    """
    problems: list[str] = []
    for unit in units:
        # Most units are clean, and a clean unit is told in two searches; only a unit
        # that is not is gone through field by field, to say where.
        if not _texts_clean(unit, _UNIT_TEXT) or _scope_problems(unit.write_scope, ""):
            where = f"unit {one_line(str(unit.id), _ID_IN_PATH)}"
            problems += _text_problems(_fields(unit), where, _UNIT_TEXT)
    if problems:
        raise ValidationError("units", problems)
    check_dependencies((unit.id, unit.deps, f"unit {unit.id}") for unit in units)


def check_plan(plan: Plan) -> None:
    """
    Check a `Plan` record built in Python as `parse_plan` checks a plan document.

    Problems are addressed as ``plan.steps[0].step``.

    Raises:
        ValidationError: Listing every forbidden character and empty write scope.
        PlanError: On duplicate ids, unknown dependencies or cycles.

    .. versionadded:: 0.1.0
    """
    paths = [f"plan.steps[{index}]" for index in range(len(plan.steps))]
    problems = _text_problems({"explanation": plan.explanation}, "plan", {"explanation": _PROSE})
    for step, path in zip(plan.steps, paths, strict=True):
        problems += _text_problems(_fields(step), path, _STEP_TEXT)
    if problems:
        raise ValidationError("plan", problems)
    check_dependencies(
        (step.id, step.deps, path) for step, path in zip(plan.steps, paths, strict=True)
    )
