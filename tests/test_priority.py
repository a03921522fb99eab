"""Admission priority: longest remaining path first, plan order otherwise."""

from __future__ import annotations

import functools

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh
from mesh.planning._priority import admission_ranks, remaining_paths


def unit(uid: str, *deps: str, estimate: float | None = None) -> mesh.Unit:
    return mesh.Unit(id=uid, objective="work", deps=deps, estimate_seconds=estimate)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[mesh.Unit], dict[str, float]]:
    """Units in plan order, each depending on earlier ones, with estimates for some."""
    count = draw(st.integers(0, 25))
    units: list[mesh.Unit] = []
    for index in range(count):
        earlier = [f"u{j}" for j in range(index)]
        deps = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if index else []
        units.append(unit(f"u{index}", *deps))
    known = draw(
        st.lists(st.sampled_from([u.id for u in units]), unique=True) if units else st.just([])
    )
    seconds = st.floats(0.5, 100, allow_nan=False)
    return units, {uid: draw(seconds) for uid in known}


def reference_paths(units: list[mesh.Unit], estimates: dict[str, float]) -> dict[str, float]:
    """The rule, written recursively: own estimate (or the mean) plus the longest dependant path."""
    known = [estimates[u.id] for u in units if u.id in estimates]  # summed in plan order
    fallback = sum(known) / len(known) if known else 1.0
    dependants = {u.id: [d.id for d in units if u.id in d.deps] for u in units}

    @functools.cache
    def path(uid: str) -> float:
        return estimates.get(uid, fallback) + max(map(path, dependants[uid]), default=0.0)

    return {u.id: path(u.id) for u in units}


class TestAdmissionRanks:
    @given(dags())
    def test_ranks_are_a_permutation(self, dag: tuple[list[mesh.Unit], dict[str, float]]) -> None:
        """Every unit gets one rank, and the ranks are 0..n-1."""
        units, estimates = dag
        ranks = admission_ranks(units, estimates)
        assert [u.id for u in units] == list(ranks)
        assert list(range(len(units))) == sorted(ranks.values())

    @given(dags())
    def test_without_estimates_ranks_follow_plan_order(
        self, dag: tuple[list[mesh.Unit], dict[str, float]]
    ) -> None:
        """No estimate anywhere: rank i is the i-th unit of the plan."""
        units, _ = dag
        expected = {u.id: index for index, u in enumerate(units)}
        assert expected == admission_ranks(units)
        assert expected == admission_ranks(units, {})
        assert expected == admission_ranks(units, {"not-a-unit": 5.0})

    @given(dags())
    def test_ranks_sort_by_longest_remaining_path(
        self, dag: tuple[list[mesh.Unit], dict[str, float]]
    ) -> None:
        """Ranks are a stable sort by the recursive rule; a unit outranks its dependants."""
        units, estimates = dag
        ranks = admission_ranks(units, estimates)
        if estimates:
            expected = reference_paths(units, estimates)
            assert expected == remaining_paths(units, estimates)
            order = sorted(range(len(units)), key=lambda i: (-expected[units[i].id], i))
            assert [units[i].id for i in order] == sorted(ranks, key=ranks.__getitem__)
        for u in units:
            assert all(ranks[dep] < ranks[u.id] for dep in u.deps)

    @given(
        chain=st.lists(st.floats(1, 50), min_size=2, max_size=6),
        lone_share=st.floats(0.05, 0.95),
    )
    def test_the_head_of_a_long_chain_outranks_a_lone_short_unit(
        self, chain: list[float], lone_share: float
    ) -> None:
        """A lone unit shorter than a chain starts after the chain's head, though listed first."""
        lone = sum(chain) * lone_share
        if lone <= chain[0]:
            lone = (chain[0] + sum(chain)) / 2
        units = [unit("lone")] + [
            unit(f"c{i}", *((f"c{i - 1}",) if i else ())) for i in range(len(chain))
        ]
        estimates = {"lone": lone} | {f"c{i}": seconds for i, seconds in enumerate(chain)}
        ranks = admission_ranks(units, estimates)
        assert ranks["c0"] < ranks["lone"]
        # Alone, the lone unit would outweigh the head: the chain behind it is what counts.
        assert estimates["lone"] > estimates["c0"]

    @given(dags(), st.lists(st.text(max_size=4), min_size=1, max_size=4))
    def test_unknown_dependencies_are_ignored(
        self, dag: tuple[list[mesh.Unit], dict[str, float]], ghosts: list[str]
    ) -> None:
        """Deps on ids that are not units (completed or cut steps) change nothing."""
        units, estimates = dag
        known = {u.id for u in units}
        extra = tuple(g for g in ghosts if g not in known)
        haunted = [attrs.evolve(u, deps=(*u.deps, *extra)) for u in units]
        assert admission_ranks(units, estimates) == admission_ranks(haunted, estimates)

    def test_missing_estimates_count_as_the_mean(self) -> None:
        """A unit without an estimate weighs the mean of the known ones (here 6)."""
        units = [unit("short"), unit("unknown"), unit("long")]
        assert admission_ranks(units, {"short": 2, "long": 10}) == {
            "long": 0,
            "unknown": 1,
            "short": 2,
        }
        assert remaining_paths(units, {"short": 2, "long": 10}) == {
            "short": 2.0,
            "unknown": 6.0,
            "long": 10.0,
        }

    def test_units_carry_their_own_estimates(self) -> None:
        """Without a mapping, each unit's estimate_seconds is read."""
        units = [unit("a", estimate=1), unit("b", estimate=30), unit("c", "a", estimate=40)]
        assert admission_ranks(units) == {"a": 0, "b": 2, "c": 1}
        assert remaining_paths(units) == {"a": 41.0, "b": 30.0, "c": 40.0}

    def test_equal_paths_keep_plan_order(self) -> None:
        """Ties break by plan order."""
        units = [unit("x"), unit("y"), unit("z")]
        assert admission_ranks(units, {"x": 3, "y": 3, "z": 3}) == {"x": 0, "y": 1, "z": 2}

    def test_repeated_ids_rank_once(self) -> None:
        """A repeated id is ranked once, as its first unit."""
        units = [unit("a", estimate=1), unit("b", estimate=2), unit("a", "b", estimate=9)]
        assert admission_ranks(units) == {"a": 1, "b": 0}

    def test_cycles_do_not_break_ranking(self) -> None:
        """A cycle (refused before any run) still gets ranks, without recursion or a hang."""
        units = [unit("a", "b"), unit("b", "a"), unit("c", "a"), unit("d")]
        ranks = admission_ranks(units, {"a": 1, "b": 2, "c": 5, "d": 1})
        assert sorted(ranks.values()) == [0, 1, 2, 3]
        assert ranks["a"] < ranks["c"]

    def test_long_chains_need_no_recursion(self) -> None:
        """A chain far deeper than the recursion limit is ranked head first."""
        units = [unit("n0")] + [unit(f"n{i}", f"n{i - 1}") for i in range(1, 5000)]
        ranks = admission_ranks(units, {"n0": 1.0})
        assert ranks["n0"] == 0
        assert ranks["n4999"] == 4999

    @pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), True])
    def test_bad_estimates_are_refused(self, bad: float) -> None:
        """A negative, non-finite or boolean estimate is a ValueError naming the unit."""
        with pytest.raises(ValueError, match="estimate for 'a'"):
            admission_ranks([unit("a")], {"a": bad})
