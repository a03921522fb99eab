"""The batch CSV contract, deps CSV validation and the floor gate."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh
import mesh.batch


def batch_csv(
    rows: list[dict[str, str]], columns: tuple[str, ...] = mesh.batch.BATCH_COLUMNS
) -> str:
    base = dict.fromkeys(mesh.batch.BATCH_COLUMNS, "x") | {"lane": "coder", "triplet_index": "1"}
    return mesh.batch.format_csv(
        columns, ([(base | row).get(c, "") for c in columns] for row in rows)
    )


cell_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


class TestParseBatchCsv:
    def test_rows_and_defaults(self) -> None:
        """Rows parse to BatchRow; a missing base_sha column defaults to HEAD."""
        columns = tuple(c for c in mesh.batch.BATCH_COLUMNS if c != "base_sha")
        rows = mesh.batch.parse_batch_csv(
            batch_csv([{"id": "r1"}, {"id": "r2", "lane": "fixer"}], columns)
        )
        assert [(r.id, r.lane, r.base_sha) for r in rows] == [
            ("r1", mesh.Lane.CODER, "HEAD"),
            ("r2", mesh.Lane.FIXER, "HEAD"),
        ]

    def test_quoted_commas_and_newlines(self) -> None:
        """Real CSV parsing: commas, quotes and newlines inside cells survive."""
        objective = 'fix "a, b"\nthen c'
        (row,) = mesh.batch.parse_batch_csv(batch_csv([{"id": "r1", "objective": objective}]))
        assert objective == row.objective

    def test_empty_ids_and_blank_lines_are_skipped(self) -> None:
        """Rows whose id is empty, and blank lines, are not rows."""
        text = batch_csv([{"id": ""}, {"id": "r2"}]) + "\r\n\r\n"
        assert [r.id for r in mesh.batch.parse_batch_csv(text)] == ["r2"]

    def test_byte_order_mark_in_header(self) -> None:
        """A header starting with a UTF-8 BOM (spreadsheet export) still has an `id` column."""
        (row,) = mesh.batch.parse_batch_csv("\ufeff" + batch_csv([{"id": "r"}]))
        assert row.id == "r"

    def test_extra_columns_are_ignored(self) -> None:
        """Columns beyond the contract are allowed."""
        (row,) = mesh.batch.parse_batch_csv(
            batch_csv([{"id": "r"}], (*mesh.batch.BATCH_COLUMNS, "note"))
        )
        assert row.id == "r"

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("", "empty file"),
            ("id,objective\nr,o\n", "missing required columns unit_scope, write_scope"),
            (batch_csv([{"id": "r", "lane": "painter"}]), "line 2: unknown lane 'painter'"),
            ("id,id\n", "duplicate columns id"),
            (batch_csv([{"id": "r"}]) + "short,row\r\n", "line 3 has 2 cells"),
            (batch_csv([{"id": "r"}]) + '"unterminated\r\n', "line"),
        ],
    )
    def test_contract_errors(self, text: str, match: str) -> None:
        """Each contract breach is a CsvContractError naming where."""
        with pytest.raises(mesh.batch.CsvContractError, match=match):
            mesh.batch.parse_batch_csv(text)

    @given(st.lists(st.lists(cell_text, min_size=3, max_size=3), max_size=8))
    def test_csv_round_trip(self, rows: list[list[str]]) -> None:
        """format_csv then csv.reader gives back exactly the cells written."""
        text = mesh.batch.format_csv(["a", "b", "c"], rows)
        parsed = list(csv.reader(io.StringIO(text, newline="")))
        assert [["a", "b", "c"], *rows] == parsed

    @given(
        st.lists(
            st.fixed_dictionaries({"id": cell_text.filter(str.strip), "objective": cell_text}),
            max_size=6,
        )
    )
    def test_batch_round_trip(self, rows: list[dict[str, str]]) -> None:
        """Batch rows written with format_csv parse back to the same cells."""
        parsed = mesh.batch.parse_batch_csv(batch_csv(rows))
        assert [(r["id"], r["objective"]) for r in rows] == [(p.id, p.objective) for p in parsed]
        assert all(p.cells()[0] == p.id for p in parsed)


class TestDeps:
    def test_parse(self) -> None:
        """depends_on splits on ';' or ','; interactive_lead is a boolean."""
        rows = mesh.batch.parse_deps_csv("id,depends_on,interactive_lead\na,,true\nb,a;c,\nc,a,0\n")
        assert [(r.id, r.depends_on, r.interactive_lead) for r in rows] == [
            ("a", (), True),
            ("b", ("a", "c"), False),
            ("c", ("a",), False),
        ]

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("id,depends_on\na,ghost\n", "unknown id 'ghost'"),
            ("id,depends_on\na,\na,\n", "duplicate id 'a'"),
            ("id,depends_on\na,b\nb,a\n", "cycle"),
            ("id,depends_on,interactive_lead\na,,\nb,a,true\n", "interactive lead 'b'"),
        ],
    )
    def test_invalid_tables(self, text: str, match: str) -> None:
        """Unknown ids, duplicates, cycles and leads with deps are errors."""
        with pytest.raises(mesh.batch.CsvContractError, match=match):
            mesh.batch.validate_deps(mesh.batch.parse_deps_csv(text))

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("id\na\n", "missing required columns depends_on"),
            ("id,depends_on,interactive_lead\na,,maybe\n", "expected true/false"),
            ("id,depends_on\n,a\n", "empty id"),
        ],
    )
    def test_malformed(self, text: str, match: str) -> None:
        """Malformed deps CSVs are contract errors."""
        with pytest.raises(mesh.batch.CsvContractError, match=match):
            mesh.batch.parse_deps_csv(text)

    def test_batch_ids_are_known(self) -> None:
        """A dependency may name a batch row id that has no deps row."""
        mesh.batch.validate_deps(
            mesh.batch.parse_deps_csv("id,depends_on\na,r1\n"), known_ids=["r1"]
        )


class TestFloorGate:
    @pytest.mark.parametrize(
        ("concurrency", "runnable", "floor", "expected"),
        [
            (5, 5, 3, (5, True, mesh.batch.FloorResult.PASS)),
            (2, 5, 3, (2, True, mesh.batch.FloorResult.FAIL)),
            (2, 2, 3, (2, False, mesh.batch.FloorResult.NOT_APPLICABLE)),
            (9, 3, 3, (3, True, mesh.batch.FloorResult.PASS)),
        ],
    )
    def test_gate(
        self,
        concurrency: int,
        runnable: int,
        floor: int,
        expected: tuple[int, bool, mesh.batch.FloorResult],
    ) -> None:
        """effective_peak = min(concurrency, runnable); applies only at runnable >= floor."""
        assert expected == mesh.batch.floor_gate(
            concurrency=concurrency, runnable=runnable, floor_threshold=floor
        )


class TestPrepareBatch:
    def test_prepared_document_and_rows(self) -> None:
        """Output rows are queued/pending with empty evidence; the document follows the contract."""
        prepared = mesh.batch.prepare_batch(
            batch_csv([{"id": "r1"}, {"id": "r2"}]), max_concurrency=4
        )
        assert prepared.to_document(csv_path="in.csv", output_csv_path="out.csv") == {
            "command": "run_csv",
            "row_count": 2,
            "csv_path": "in.csv",
            "output_csv_path": "out.csv",
            "status": "prepared",
            "spawn_substrate": "spawn_agents_on_csv",
            "mesh_truth_verdict": True,
            "max_concurrency": 4,
            "runnable_units": 2,
            "effective_peak": 2,
            "floor_threshold": 3,
            "floor_applicable": False,
            "floor_result": "not_applicable",
            "deps_check_status": "skipped",
        }
        assert prepared.output_rows[0].cells() == (
            "r1",
            "x",
            "1",
            "coder",
            "queued",
            "pending",
            "x",
            "x",
            "x",
            "0",
            '{"command":"","key_line":"","exit_code":0}',
        )

    def test_fail_on_floor(self) -> None:
        """fail_on_floor raises when the gate fails."""
        with pytest.raises(mesh.batch.FloorGateFailed, match="below the floor"):
            mesh.batch.prepare_batch(
                batch_csv([{"id": f"r{i}"} for i in range(5)]),
                max_concurrency=2,
                fail_on_floor=True,
            )

    def test_fail_on_floor_needs_concurrency(self) -> None:
        """fail_on_floor without max_concurrency is an input error."""
        with pytest.raises(mesh.InputError, match="needs max_concurrency"):
            mesh.batch.prepare_batch(batch_csv([{"id": "r"}]), fail_on_floor=True)

    def test_deps_checked(self) -> None:
        """A valid deps CSV sets deps_check_status to pass."""
        prepared = mesh.batch.prepare_batch(
            batch_csv([{"id": "r1"}]), deps_csv_text="id,depends_on\nr2,r1\n"
        )
        assert prepared.deps_check_status == "pass"

    @pytest.mark.parametrize(
        "kwargs", [{"max_concurrency": 0}, {"runnable_units": -1}, {"floor_threshold": 0}]
    )
    def test_out_of_range(self, kwargs: dict[str, int]) -> None:
        """Out-of-range numbers are input errors."""
        with pytest.raises(mesh.InputError):
            mesh.batch.prepare_batch(batch_csv([{"id": "r"}]), **kwargs)  # type: ignore[arg-type]
