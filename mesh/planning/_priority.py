"""
Admission priority: which ready unit should start first. Pure: no I/O.

When more units are ready than may run, starting the one at the head of the
longest chain of work still ahead shortens the whole run: list scheduling by
longest remaining path, the classic critical-path heuristic. Without any
estimate every unit weighs the same, and the order is simply the plan's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..contracts._records import Unit

__all__ = ["admission_ranks", "remaining_paths"]


def _weights(units: Sequence[Unit], estimates: Mapping[str, float] | None) -> dict[str, float]:
    """Each unit's estimate in seconds; the mean of the known ones where a unit has none."""
    known: dict[str, float] = {}
    for unit in units:
        value = unit.estimate_seconds if estimates is None else estimates.get(unit.id)
        if value is None:
            continue
        if isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(
                f"estimate for {unit.id!r} must be a finite number >= 0, got {value!r}"
            )
        known.setdefault(unit.id, float(value))
    fallback = sum(known.values()) / len(known) if known else 1.0
    return {unit.id: known.get(unit.id, fallback) for unit in units}


def remaining_paths(
    units: Sequence[Unit], estimates: Mapping[str, float] | None = None
) -> dict[str, float]:
    """
    Each unit's longest remaining path: its own estimate plus the longest chain after it.

    A unit's chain runs through its dependants (the units that list it in
    ``deps``), so a unit always weighs at least as much as any of its
    dependants. Dependencies on ids that are not among ``units`` (completed
    or cut steps) are ignored, and so is every repetition of an id after its
    first unit. A dependency cycle, which `check_dependencies` refuses before
    any run, cannot make this fail: a unit on one counts only the dependants
    whose paths are known without it.

    Args:
        units: The units, in plan order.
        estimates: Seconds per unit id; None reads each unit's own
            ``estimate_seconds``. A unit without an estimate counts as the
            mean of the known estimates (1.0 when none is known).

    Raises:
        ValueError: When an estimate is negative, not finite, or a boolean.

    .. versionadded:: 0.1.0
    """
    weights = _weights(units, estimates)
    # One pass to index dependants, one Kahn pass from the sinks back up:
    # O(units + deps) with no recursion, however long the chains.
    first: dict[str, Unit] = {}
    for unit in units:
        first.setdefault(unit.id, unit)
    deps = {uid: tuple(d for d in dict.fromkeys(u.deps) if d in first) for uid, u in first.items()}
    dependants: dict[str, list[str]] = {uid: [] for uid in first}
    for uid, needed in deps.items():
        for dep in needed:
            dependants[dep].append(uid)
    waiting = {uid: len(after) for uid, after in dependants.items()}
    ready = [uid for uid, count in waiting.items() if count == 0]
    paths: dict[str, float] = {}
    while ready:
        uid = ready.pop()
        paths[uid] = weights[uid] + max((paths[d] for d in dependants[uid]), default=0.0)
        for dep in deps[uid]:
            waiting[dep] -= 1
            if waiting[dep] == 0:
                ready.append(dep)
    for uid in first:  # only units on or behind a cycle are still missing
        if uid not in paths:
            paths[uid] = weights[uid] + max(
                (paths[d] for d in dependants[uid] if d in paths), default=0.0
            )
    return paths


def admission_ranks(
    units: Sequence[Unit], estimates: Mapping[str, float] | None = None
) -> dict[str, int]:
    """
    Each unit's admission rank (0 first): the order in which ready units should start.

    With at least one estimate known, units rank by their longest remaining
    path (see `remaining_paths`), longest first; units without an estimate
    count as the mean of the known estimates. Ties, and plans with no
    estimate at all, keep plan order. Ranks are 0..n-1, one per distinct id, keyed in
    plan order.
    Linear in units and dependencies, plus one sort when there are estimates.

    Args:
        units: The units, in plan order.
        estimates: Seconds per unit id; None reads each unit's own ``estimate_seconds``.

    Raises:
        ValueError: When an estimate is negative, not finite, or a boolean.

    .. versionadded:: 0.1.0
    """
    order = list(dict.fromkeys(unit.id for unit in units))
    if estimates is None:
        has_estimate = any(unit.estimate_seconds is not None for unit in units)
    else:
        has_estimate = any(uid in estimates for uid in order)
    if not has_estimate:
        return {uid: rank for rank, uid in enumerate(order)}
    paths = remaining_paths(units, estimates)
    position = {uid: index for index, uid in enumerate(order)}
    ranked = sorted(order, key=lambda uid: (-paths[uid], position[uid]))
    ranks = {uid: rank for rank, uid in enumerate(ranked)}
    return {uid: ranks[uid] for uid in order}
