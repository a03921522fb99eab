"""Wave selection: the next ready batch of candidate rows. Pure: no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contracts._enums import Lane
from ..contracts._errors import InputError
from ..contracts._records import BatchRow, Unit, Wave, join_scope
from ._budget import MAX_TRIPLET_WIDTH
from ._plan import parse_units

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["select_wave"]


def select_wave(
    units: Sequence[Unit] | object,
    *,
    max_active: int = 1,
    lane: Lane | str = Lane.CODER,
    triplet_width: int = MAX_TRIPLET_WIDTH,
) -> Wave:
    """
    Select up to ``max_active`` ready units and emit ``triplet_width`` rows for each.

    Units are walked in order. A unit is skipped when it still waits on
    dependencies, or when another selected unit already has its ``unit_scope``
    (two units about the same thing never share a wave). Each selected unit
    yields rows ``{id}-{lane}-{k}`` for k = 1..W, used as both row id and
    candidate id.

    Args:
        units: `Unit` records, or a units document as ``slice`` writes it.
        max_active: How many units to select at most (>= 1).
        lane: The lane the rows are for.
        triplet_width: Rows per unit (1..3).

    Raises:
        InputError: On an out-of-range width or count, or an unknown lane.
        ValidationError: When a units document is malformed.

    .. versionadded:: 0.1.0
    """
    if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
        raise InputError(f"max_active must be a whole number >= 1, got {max_active!r}")
    if isinstance(triplet_width, bool) or triplet_width not in range(1, MAX_TRIPLET_WIDTH + 1):
        raise InputError(f"triplet_width must be 1, 2 or 3, got {triplet_width!r}")
    try:
        lane = Lane(lane)
    except ValueError:
        allowed = ", ".join(Lane)
        raise InputError(f"lane must be one of {allowed}, got {lane!r}") from None
    parsed = _as_units(units)

    taken_scopes: set[str] = set()
    rows: list[BatchRow] = []
    selected = 0
    for unit in parsed:
        if selected == max_active:
            break
        if unit.deps or unit.unit_scope in taken_scopes:
            continue
        taken_scopes.add(unit.unit_scope)
        selected += 1
        rows.extend(_rows_for(unit, lane, triplet_width))
    return Wave(
        lane=lane,
        triplet_width=triplet_width,
        units_in=len(parsed),
        units_selected=selected,
        rows=tuple(rows),
    )


def _as_units(units: Sequence[Unit] | object) -> tuple[Unit, ...]:
    if isinstance(units, list | tuple) and all(isinstance(unit, Unit) for unit in units):
        return tuple(units)
    return parse_units(units)


def _rows_for(unit: Unit, lane: Lane, width: int) -> list[BatchRow]:
    return [
        BatchRow(
            id=f"{unit.id}-{lane.value}-{index}",
            objective=unit.objective,
            unit_scope=unit.unit_scope,
            write_scope=join_scope(unit.write_scope),
            constraints=unit.constraints,
            invariants=unit.invariants,
            proof_command=unit.proof_command,
            risk_tier=unit.risk_tier.value,
            candidate_id=f"{unit.id}-{lane.value}-{index}",
            triplet_index=str(index),
            lane=lane,
            base_sha=unit.base_sha,
            delivery_mode=unit.delivery_mode.value,
            attempt=str(unit.attempt),
            variant=unit.variant,
            budget_tier=unit.budget_tier,
        )
        for index in range(1, width + 1)
    ]
