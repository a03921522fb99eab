"""
The budget policy: one concurrency authority derived from remaining budget.

Pure functions only; the engine re-reads budget through a provider and calls
`budget_policy` again.
"""

from __future__ import annotations

import math
from typing import Final

from ..contracts._enums import BudgetMode
from ..contracts._errors import InputError
from ..contracts._records import BudgetDecision, ReplayResult

__all__ = ["budget_policy", "replay"]

MAX_TRIPLET_WIDTH: Final = 3
# The candidate-width thresholds are fixed by the contract, unlike the clamp thresholds.
_CRITICAL_PERCENT: Final = 10.0
_LOW_PERCENT: Final = 15.0
_RESTORE_PERCENT: Final = 20.0
_STABLE_WAVES: Final = 2


def _percent(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return min(100.0, max(0.0, float(value)))


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


def budget_policy(
    *,
    remaining_five_hour: float,
    remaining_weekly: float,
    max_threads: int = 12,
    linear_start_threshold: float = 33.0,
    single_agent_threshold: float = 10.0,
    scaleout_threshold: float = 25.0,
    previous_triplet_width: int = 3,
    prior_wave_instability: bool = False,
    consecutive_unstable_waves: int = 0,
    consecutive_clean_waves: int = 0,
) -> BudgetDecision:
    """
    Decide how many units may be active and how many candidates each gets.

    The strict remaining budget is ``min(remaining_five_hour, remaining_weekly)``
    (each clamped to 0..100). Above ``linear_start_threshold`` there is no clamp;
    between the thresholds concurrency scales linearly; at or below
    ``single_agent_threshold`` one unit runs at a time.

    Args:
        remaining_five_hour: Percent of the 5-hour budget left.
        remaining_weekly: Percent of the weekly budget left.
        max_threads: Upper bound on active units (0 is treated as 1).
        linear_start_threshold: Percent at and below which the linear clamp starts.
        single_agent_threshold: Percent at and below which one unit runs at a time.
        scaleout_threshold: Percent above which more worker instances are allowed.
        previous_triplet_width: Candidate width of the previous wave (clamped to 1..3).
        prior_wave_instability: Whether the previous wave was unstable.
        consecutive_unstable_waves: Unstable waves in a row so far.
        consecutive_clean_waves: Clean waves in a row so far.

    Returns:
        The decision, whose ``to_document()`` is the ``budget`` command's output.

    Raises:
        InputError: On NaN/infinite percentages or negative counts.

    .. versionadded:: 0.1.0
    """
    five_hour = _percent("remaining_five_hour", remaining_five_hour)
    weekly = _percent("remaining_weekly", remaining_weekly)
    linear_start = _percent("linear_start_threshold", linear_start_threshold)
    single = _percent("single_agent_threshold", single_agent_threshold)
    scaleout = _percent("scaleout_threshold", scaleout_threshold)
    threads = max(1, _count("max_threads", max_threads))
    unstable_waves = _count("consecutive_unstable_waves", consecutive_unstable_waves)
    clean_waves = _count("consecutive_clean_waves", consecutive_clean_waves)
    strict = min(five_hour, weekly)

    if strict <= single or linear_start <= single:
        mode, active = BudgetMode.SINGLE_AGENT, 1
    elif strict <= linear_start:
        share = (strict - single) / (linear_start - single)
        mode, active = BudgetMode.LINEAR_CLAMP, max(1, math.floor(threads * share))
    else:
        mode, active = BudgetMode.FULL_FANOUT, threads

    width, reason, restored = _triplet_width(
        strict=strict,
        previous=previous_triplet_width,
        prior_instability=prior_wave_instability,
        unstable_waves=unstable_waves,
        clean_waves=clean_waves,
    )
    return BudgetDecision(
        remaining_five_hour=five_hour,
        remaining_weekly=weekly,
        remaining_strict=strict,
        linear_start_threshold=linear_start,
        single_agent_threshold=single,
        scaleout_threshold=scaleout,
        max_threads=threads,
        max_active_units=active,
        mode=mode,
        cas_scaleout_allowed=strict > scaleout,
        triplet_width=width,
        triplet_degrade_reason=reason,
        triplet_restored=restored,
    )


def _triplet_width(
    *,
    strict: float,
    previous: int,
    prior_instability: bool,
    unstable_waves: int,
    clean_waves: int,
) -> tuple[int, str, bool]:
    if isinstance(previous, bool) or not isinstance(previous, int):
        raise InputError(f"previous_triplet_width must be a whole number, got {previous!r}")
    width = min(MAX_TRIPLET_WIDTH, max(1, previous))
    if strict <= _CRITICAL_PERCENT:
        return 1, "budget_critical", False
    if unstable_waves >= _STABLE_WAVES:
        return 1, "two_unstable_waves", False
    budget_low = strict <= _LOW_PERCENT
    if budget_low or prior_instability:
        if budget_low and prior_instability:
            reason = "budget_low_and_instability"
        elif budget_low:
            reason = "budget_low"
        else:
            reason = "prior_wave_instability"
        return min(width, 2), reason, False
    if width < MAX_TRIPLET_WIDTH and strict > _RESTORE_PERCENT and clean_waves >= _STABLE_WAVES:
        return width + 1, "restored_after_clean_waves", True
    return width, "", False


def replay(
    *,
    remaining_five_hour: float,
    remaining_weekly: float,
    ready_units: int,
    max_threads: int = 12,
    previous_triplet_width: int = 3,
    prior_wave_instability: bool = False,
    consecutive_unstable_waves: int = 0,
    consecutive_clean_waves: int = 0,
) -> ReplayResult:
    """
    Simulate how ``ready_units`` split into waves under the budget policy.

    Thresholds are fixed at 33/10/25. Each wave holds at most
    ``max_active_units`` units, and each unit contributes ``triplet_width``
    rows per lane.

    Raises:
        InputError: On NaN/infinite percentages or negative counts.

    .. versionadded:: 0.1.0
    """
    decision = budget_policy(
        remaining_five_hour=remaining_five_hour,
        remaining_weekly=remaining_weekly,
        max_threads=max_threads,
        previous_triplet_width=previous_triplet_width,
        prior_wave_instability=prior_wave_instability,
        consecutive_unstable_waves=consecutive_unstable_waves,
        consecutive_clean_waves=consecutive_clean_waves,
    )
    ready = _count("ready_units", ready_units)
    size = decision.max_active_units
    waves = tuple(min(size, ready - start) for start in range(0, ready, size))
    return ReplayResult(
        mode=decision.mode,
        max_active_units=size,
        triplet_width=decision.triplet_width,
        triplet_degrade_reason=decision.triplet_degrade_reason,
        triplet_restored=decision.triplet_restored,
        ready_units=ready,
        wave_count=len(waves),
        waves=waves,
        rows_per_lane=tuple(wave * decision.triplet_width for wave in waves),
    )
