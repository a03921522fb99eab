"""`mesh.commands`: the command line as Python functions, with identical documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mesh
import mesh.batch
import mesh.commands
from mesh.cli import _cli
from mesh.contracts._convert import converter, structure

EXAMPLE_PLAN = Path(__file__).parents[1] / "examples" / "plan.json"


def cli_document(*argv: str) -> object:
    code, out, err = _cli.run(list(argv))
    assert (code, err) == (0, "")
    return json.loads(out)


class TestCommandFunctions:
    def test_budget_and_replay(self) -> None:
        """The functions return the same documents the CLI prints."""
        assert cli_document(
            "budget", "--remaining-five-hour", "40", "--remaining-weekly", "28"
        ) == mesh.commands.budget(remaining_five_hour=40, remaining_weekly=28)
        assert cli_document(
            "replay",
            "--remaining-five-hour",
            "72",
            "--remaining-weekly",
            "55",
            "--ready-units",
            "5",
        ) == mesh.commands.replay(remaining_five_hour=72, remaining_weekly=55, ready_units=5)

    def test_file_commands(self, tmp_path: Path) -> None:
        """plan_sync, slice, wave, run_csv and ledger work from Python with paths."""
        units, batch, out = tmp_path / "u.json", tmp_path / "b.csv", tmp_path / "o.csv"
        assert mesh.commands.plan_sync(input_json=EXAMPLE_PLAN)["total_steps"] == 4
        sliced = mesh.commands.slice(input_json=EXAMPLE_PLAN, output_json=units, max_slices=2)
        assert sliced["unit_count"] == 2
        assert (
            mesh.commands.wave(units_json=units, csv_path=batch, lane="fixer")["units_selected"]
            == 1
        )
        report = mesh.commands.run_csv(csv_path=batch, output_csv_path=out, runnable_units=1)
        assert (report["floor_result"], report["row_count"]) == ("not_applicable", 3)
        ledger = tmp_path / "l.json"
        ledger.write_text('{"a": 0, "b": 1}')
        assert mesh.commands.ledger(input_json=ledger) == {"command": "ledger", "events": {"b": 1}}


class TestRecordRoundTrips:
    @pytest.mark.parametrize(
        "record",
        [
            mesh.budget_policy(remaining_five_hour=40, remaining_weekly=28),
            mesh.budget_policy(
                remaining_five_hour=5, remaining_weekly=95, prior_wave_instability=True
            ),
            mesh.replay(remaining_five_hour=72, remaining_weekly=55, ready_units=30),
            mesh.plan_sync([{"step": "a"}]),
            mesh.slice_plan(json.loads(EXAMPLE_PLAN.read_text())),
            mesh.Unit(id="u", objective="o", write_scope=("a", "b"), deps=("x",)),
            mesh.batch.DepsRow(id="a", depends_on=("b",), interactive_lead=False),
        ],
        ids=lambda record: type(record).__name__,
    )
    def test_structure_of_unstructure_is_identity(self, record: object) -> None:
        """Every record survives the private converter's unstructure → structure."""
        assert record == converter.structure(converter.unstructure(record), type(record))

    def test_attrs_validators_are_reported(self) -> None:
        """A value rejected by a record's own validator is reported, not raised raw."""
        with pytest.raises(mesh.ValidationError, match=r"\$: 'attempt' must be >= 1: 0"):
            structure({"id": "u", "objective": "o", "attempt": 0}, mesh.Unit, subject="unit")


class TestWholeRunCommands:
    def test_loaded_on_first_use(self) -> None:
        """`run`, `status`, `RunReport`, ... are the engine's own, imported when first used."""
        from mesh.cli import _run_command  # noqa: PLC0415 - the module the names come from

        for name in ("RunReport", "demo", "report", "resume", "run", "status"):
            assert getattr(_run_command, name) is getattr(mesh.commands, name)

    def test_unknown_names_are_attribute_errors(self) -> None:
        """A misspelt name is an AttributeError naming it, as for any module."""
        with pytest.raises(AttributeError, match=r"'mesh\.commands' has no attribute 'stauts'"):
            _ = mesh.commands.stauts  # type: ignore[attr-defined]

    def test_run_csv_creates_the_output_folders(self, tmp_path: Path) -> None:
        """run_csv writes its output CSV into folders it creates, as slice and wave do."""
        units, batch = tmp_path / "u.json", tmp_path / "b.csv"
        out = tmp_path / "new" / "folder" / "o.csv"
        mesh.commands.slice(input_json=EXAMPLE_PLAN, output_json=units)
        mesh.commands.wave(units_json=units, csv_path=batch)
        assert mesh.commands.run_csv(csv_path=batch, output_csv_path=out)["row_count"] == 3
        assert out.read_text().startswith("id,candidate_id,")
