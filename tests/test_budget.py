"""Budget policy and replay: the spec's worked examples and the policy's invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh

percent = st.floats(min_value=-50, max_value=150, allow_nan=False, allow_infinity=False)
threads = st.integers(min_value=0, max_value=64)


class TestBudgetExamples:
    def test_linear_clamp_example(self) -> None:
        """40/28/12 → linear_clamp with 9 active units (spec example)."""
        decision = mesh.budget_policy(remaining_five_hour=40, remaining_weekly=28, max_threads=12)
        assert (decision.mode, decision.max_active_units) == (mesh.BudgetMode.LINEAR_CLAMP, 9)
        assert decision.remaining_strict == 28.0
        assert decision.cas_scaleout_allowed is True
        assert (
            decision.triplet_width,
            decision.triplet_degrade_reason,
            decision.triplet_restored,
        ) == (3, "", False)

    def test_low_budget_example(self) -> None:
        """12/50/8 → linear_clamp, 1 unit, width 2 (budget_low), no scale-out."""
        decision = mesh.budget_policy(remaining_five_hour=12, remaining_weekly=50, max_threads=8)
        assert decision.mode == mesh.BudgetMode.LINEAR_CLAMP
        assert decision.max_active_units == 1
        assert (decision.triplet_width, decision.triplet_degrade_reason) == (2, "budget_low")
        assert decision.cas_scaleout_allowed is False

    def test_critical_budget_example(self) -> None:
        """9/40 → single_agent, width 1 (budget_critical)."""
        decision = mesh.budget_policy(remaining_five_hour=9, remaining_weekly=40)
        assert decision.mode == mesh.BudgetMode.SINGLE_AGENT
        assert decision.max_active_units == 1
        assert (
            decision.triplet_width,
            decision.triplet_degrade_reason,
        ) == (1, "budget_critical")

    def test_full_fanout(self) -> None:
        """Above the linear start there is no clamp."""
        decision = mesh.budget_policy(remaining_five_hour=90, remaining_weekly=34, max_threads=7)
        assert (decision.mode, decision.max_active_units) == (mesh.BudgetMode.FULL_FANOUT, 7)

    def test_zero_threads_counts_as_one(self) -> None:
        """--max-threads 0 is treated as 1."""
        decision = mesh.budget_policy(remaining_five_hour=90, remaining_weekly=90, max_threads=0)
        assert (decision.max_threads, decision.max_active_units) == (1, 1)

    def test_percentages_are_clamped(self) -> None:
        """Percentages outside 0..100 are clamped before use."""
        decision = mesh.budget_policy(remaining_five_hour=150, remaining_weekly=-3)
        assert (
            decision.remaining_five_hour,
            decision.remaining_weekly,
            decision.remaining_strict,
        ) == (100.0, 0.0, 0.0)

    def test_linear_start_at_or_below_single_threshold_is_single_agent(self) -> None:
        """A linear start not above the single threshold means one unit (no division by zero)."""
        decision = mesh.budget_policy(
            remaining_five_hour=20,
            remaining_weekly=20,
            linear_start_threshold=10,
            single_agent_threshold=10,
        )
        assert decision.mode == mesh.BudgetMode.SINGLE_AGENT

    @pytest.mark.parametrize(
        ("kwargs", "expected"),
        [
            ({"consecutive_unstable_waves": 2}, (1, "two_unstable_waves", False)),
            ({"prior_wave_instability": True}, (2, "prior_wave_instability", False)),
            (
                {"prior_wave_instability": True, "remaining_five_hour": 14},
                (2, "budget_low_and_instability", False),
            ),
            (
                {"previous_triplet_width": 2, "consecutive_clean_waves": 2},
                (3, "restored_after_clean_waves", True),
            ),
            ({"previous_triplet_width": 2, "consecutive_clean_waves": 1}, (2, "", False)),
            (
                {"previous_triplet_width": 1, "consecutive_clean_waves": 2, "remaining_weekly": 20},
                (1, "", False),
            ),
            ({"previous_triplet_width": 9}, (3, "", False)),
            ({"previous_triplet_width": -4}, (1, "", False)),
        ],
    )
    def test_triplet_width_rules(
        self, kwargs: dict[str, object], expected: tuple[int, str, bool]
    ) -> None:
        """Each candidate-width rule, in its order of precedence."""
        arguments: dict[str, object] = {"remaining_five_hour": 60, "remaining_weekly": 60}
        arguments.update(kwargs)
        decision = mesh.budget_policy(**arguments)  # type: ignore[arg-type]
        assert expected == (
            decision.triplet_width,
            decision.triplet_degrade_reason,
            decision.triplet_restored,
        )

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_percentages_are_rejected(self, bad: float) -> None:
        """NaN and infinities are input errors, never silently clamped."""
        with pytest.raises(mesh.InputError, match="finite"):
            mesh.budget_policy(remaining_five_hour=bad, remaining_weekly=50)

    def test_negative_counts_are_rejected(self) -> None:
        """Negative wave counts are input errors."""
        with pytest.raises(mesh.InputError, match="consecutive_clean_waves"):
            mesh.budget_policy(
                remaining_five_hour=50, remaining_weekly=50, consecutive_clean_waves=-1
            )

    def test_text_format(self) -> None:
        """The text line matches the contract's example exactly."""
        decision = mesh.budget_policy(remaining_five_hour=40, remaining_weekly=28, max_threads=12)
        assert decision.to_text() == (
            "mode=linear_clamp strict_remaining=28.00 max_active_units=9 "
            "cas_scaleout_allowed=true triplet_width=3 triplet_degrade_reason= "
            "triplet_restored=false"
        )

    def test_document_key_order(self) -> None:
        """The JSON document lists the contract's keys in the contract's order."""
        document = mesh.budget_policy(remaining_five_hour=40, remaining_weekly=28).to_document()
        assert list(document) == [
            "command",
            "remaining_five_hour",
            "remaining_weekly",
            "remaining_strict",
            "linear_start_threshold",
            "single_agent_threshold",
            "scaleout_threshold",
            "max_threads",
            "max_active_units",
            "mode",
            "cas_scaleout_allowed",
            "triplet_width",
            "triplet_degrade_reason",
            "triplet_restored",
        ]


class TestBudgetProperties:
    @given(five_hour=percent, weekly=percent, more=st.floats(0, 100), max_threads=threads)
    def test_monotone_in_remaining_budget(
        self, five_hour: float, weekly: float, more: float, max_threads: int
    ) -> None:
        """More remaining budget never means fewer active units."""
        low = mesh.budget_policy(
            remaining_five_hour=five_hour, remaining_weekly=weekly, max_threads=max_threads
        )
        high = mesh.budget_policy(
            remaining_five_hour=five_hour + more,
            remaining_weekly=weekly + more,
            max_threads=max_threads,
        )
        assert low.max_active_units <= high.max_active_units

    @given(
        five_hour=percent,
        weekly=percent,
        max_threads=threads,
        linear=st.floats(0, 100),
        single=st.floats(0, 100),
    )
    def test_active_units_within_bounds(
        self, five_hour: float, weekly: float, max_threads: int, linear: float, single: float
    ) -> None:
        """1 <= active units <= max threads (0 threads counts as 1), for any thresholds."""
        decision = mesh.budget_policy(
            remaining_five_hour=five_hour,
            remaining_weekly=weekly,
            max_threads=max_threads,
            linear_start_threshold=linear,
            single_agent_threshold=single,
        )
        assert 1 <= decision.max_active_units <= max(1, max_threads)
        assert 1 <= decision.triplet_width <= 3

    @given(five_hour=percent, weekly=percent)
    def test_strict_is_the_minimum(self, five_hour: float, weekly: float) -> None:
        """The strict remaining budget is the smaller of the two, clamped."""
        decision = mesh.budget_policy(remaining_five_hour=five_hour, remaining_weekly=weekly)
        assert min(max(0.0, min(five_hour, weekly)), 100.0) == decision.remaining_strict


class TestReplay:
    def test_example(self) -> None:
        """72/55/12/24 → full_fanout, waves [12, 12], rows [36, 36] (spec example)."""
        result = mesh.replay(
            remaining_five_hour=72, remaining_weekly=55, max_threads=12, ready_units=24
        )
        assert result.to_document() == {
            "command": "replay",
            "mode": "full_fanout",
            "max_active_units": 12,
            "triplet_width": 3,
            "triplet_degrade_reason": "",
            "triplet_restored": False,
            "ready_units": 24,
            "wave_count": 2,
            "waves": [12, 12],
            "rows_per_lane": [36, 36],
        }

    def test_remainder_wave_and_no_units(self) -> None:
        """A partial last wave is kept; zero ready units means zero waves."""
        result = mesh.replay(
            remaining_five_hour=72, remaining_weekly=55, max_threads=5, ready_units=11
        )
        assert result.waves == (5, 5, 1)
        empty = mesh.replay(remaining_five_hour=72, remaining_weekly=55, ready_units=0)
        assert (empty.waves, empty.wave_count) == ((), 0)

    @given(ready=st.integers(0, 500), five_hour=percent, weekly=percent, max_threads=threads)
    def test_waves_cover_ready_units(
        self, ready: int, five_hour: float, weekly: float, max_threads: int
    ) -> None:
        """Waves add up to the ready units, none exceeds the clamp, rows = wave * width."""
        result = mesh.replay(
            remaining_five_hour=five_hour,
            remaining_weekly=weekly,
            max_threads=max_threads,
            ready_units=ready,
        )
        assert ready == sum(result.waves)
        assert all(1 <= wave <= result.max_active_units for wave in result.waves)
        assert [w * result.triplet_width for w in result.waves] == list(result.rows_per_lane)

    def test_negative_ready_units_rejected(self) -> None:
        """ready_units below zero is an input error."""
        with pytest.raises(mesh.InputError, match="ready_units"):
            mesh.replay(remaining_five_hour=50, remaining_weekly=50, ready_units=-1)


class TestBudgetArgumentTypes:
    def test_width_must_be_a_whole_number(self) -> None:
        """A previous width that is not an integer is an input error, not a crash."""
        with pytest.raises(mesh.InputError, match="previous_triplet_width"):
            mesh.budget_policy(
                remaining_five_hour=50,
                remaining_weekly=50,
                previous_triplet_width="3",  # type: ignore[arg-type]
            )
