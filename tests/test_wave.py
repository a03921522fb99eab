"""Wave selection."""

from __future__ import annotations

import pytest

import mesh


def unit(unit_id: str, scope: str = "unknown", deps: tuple[str, ...] = ()) -> mesh.Unit:
    return mesh.Unit(id=unit_id, objective=f"do {unit_id}", unit_scope=scope, deps=deps)


class TestSelectWave:
    def test_rows_per_selected_unit(self) -> None:
        """Each selected unit yields W rows with id = candidate_id = {id}-{lane}-{k}."""
        wave = mesh.select_wave(
            [unit("u1", "a"), unit("u2", "b")], max_active=2, lane="prover", triplet_width=2
        )
        assert [r.id for r in wave.rows] == [
            "u1-prover-1",
            "u1-prover-2",
            "u2-prover-1",
            "u2-prover-2",
        ]
        assert all(r.id == r.candidate_id for r in wave.rows)
        assert [r.triplet_index for r in wave.rows] == ["1", "2", "1", "2"]
        assert (wave.units_in, wave.units_selected) == (2, 2)

    def test_same_scope_is_skipped(self) -> None:
        """A unit whose unit_scope is already in the wave waits for the next one."""
        wave = mesh.select_wave([unit("u1", "a"), unit("u2", "a"), unit("u3", "b")], max_active=3)
        assert wave.units_selected == 2
        assert {"u1-coder-1", "u3-coder-1"} <= {r.id for r in wave.rows}

    def test_missing_scope_counts_as_unknown(self) -> None:
        """Units without a scope share the scope 'unknown', so only one is selected."""
        wave = mesh.select_wave({"units": [{"id": "a"}, {"id": "b"}]}, max_active=5)
        assert wave.units_selected == 1

    def test_stops_after_max_active(self) -> None:
        """No more than max_active units are selected."""
        units = [unit(f"u{i}", f"s{i}") for i in range(10)]
        assert mesh.select_wave(units, max_active=4).units_selected == 4

    def test_units_waiting_on_deps_are_not_ready(self) -> None:
        """A unit with open dependencies is skipped."""
        wave = mesh.select_wave([unit("u2", "b", deps=("u1",)), unit("u3", "c")], max_active=2)
        assert sorted({r.id.split("-")[0] for r in wave.rows}) == ["u3"]

    def test_document(self) -> None:
        """The wave document has the contract's keys in order."""
        wave = mesh.select_wave([unit("u1")])
        assert wave.to_document(csv_path="b.csv") == {
            "command": "wave",
            "lane": "coder",
            "triplet_width": 3,
            "units_in": 1,
            "units_selected": 1,
            "rows_emitted": 3,
            "csv_path": "b.csv",
        }

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"max_active": 0}, "max_active"),
            ({"triplet_width": 4}, "triplet_width"),
            ({"triplet_width": 0}, "triplet_width"),
            ({"lane": "painter"}, "lane must be one of"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, object], match: str) -> None:
        """Out-of-range widths and counts and unknown lanes are input errors."""
        with pytest.raises(mesh.InputError, match=match):
            mesh.select_wave([unit("u1")], **kwargs)  # type: ignore[arg-type]
