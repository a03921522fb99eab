"""The `mesh` console script, run for real in subprocesses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import attrs
import pytest

import mesh
import mesh.batch
from mesh.cli import _cli, _options, _parser

RunMesh = Callable[..., CompletedProcess[str]]
EXAMPLE_PLAN = Path(__file__).parents[1] / "examples" / "plan.json"


def ok(process: CompletedProcess[str]) -> dict[str, object]:
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    document: dict[str, object] = json.loads(process.stdout)
    return document


def failed(process: CompletedProcess[str], kind: str) -> str:
    assert process.returncode == 1
    assert process.stdout == ""
    assert "Traceback" not in process.stderr
    assert len(process.stderr.splitlines()) == 1, process.stderr
    assert process.stderr.startswith(f"error: {kind}: "), process.stderr
    return process.stderr


class TestGeneral:
    def test_help_and_version(self, run_mesh: RunMesh) -> None:
        """`mesh`, `mesh --help`, `mesh CMD --help` print help; `--version` the version."""
        for args in ((), ("--help",)):
            process = run_mesh(*args)
            assert process.returncode == 0
            assert "usage: mesh COMMAND" in process.stdout
        process = run_mesh("budget", "--help")
        assert "--remaining-five-hour PERCENT" in process.stdout
        assert f"mesh {mesh.__version__}\n" == run_mesh("--version").stdout

    def test_unknown_command(self, run_mesh: RunMesh) -> None:
        """An unknown command prints usage on stderr and exits 2."""
        process = run_mesh("frobnicate")
        assert (process.returncode, process.stdout) == (2, "")
        assert "unknown command 'frobnicate'" in process.stderr
        assert "usage: mesh COMMAND" in process.stderr

    @pytest.mark.parametrize("command", sorted(_cli.COMMANDS))
    def test_every_command_has_help(self, command: str) -> None:
        """Each command's help lists every one of its flags and an example."""
        code, out, err = _cli.run([command, "-h"])
        assert (code, err) == (0, "")
        for flag in _cli.COMMANDS[command].flags:
            assert flag.name in out
        assert "example: mesh " in out


class TestBudget:
    def test_example(self, run_mesh: RunMesh) -> None:
        """40/28/12 → linear_clamp, 9 (spec example)."""
        document = ok(
            run_mesh(
                "budget",
                "--remaining-five-hour",
                "40",
                "--remaining-weekly",
                "28",
                "--max-threads",
                "12",
            )
        )
        assert (
            document["command"],
            document["mode"],
            document["max_active_units"],
        ) == ("budget", "linear_clamp", 9)

    def test_text_format_and_equals_syntax(self, run_mesh: RunMesh) -> None:
        """--flag=value works, and --format text prints the one-line summary."""
        process = run_mesh(
            "budget", "--remaining-five-hour=40", "--remaining-weekly=28", "--format", "text"
        )
        assert process.stdout.startswith(
            "mode=linear_clamp strict_remaining=28.00 max_active_units=9 "
        )

    def test_bool_flag(self, run_mesh: RunMesh) -> None:
        """--prior-wave-instability accepts true/false/1/0."""
        document = ok(
            run_mesh(
                "budget",
                "--remaining-five-hour",
                "60",
                "--remaining-weekly",
                "60",
                "--prior-wave-instability",
                "1",
            )
        )
        assert document["triplet_degrade_reason"] == "prior_wave_instability"

    @pytest.mark.parametrize(
        ("args", "kind", "fragment"),
        [
            (
                ("--remaining-five-hour", "40"),
                "MissingRequiredOption",
                "--remaining-weekly is required",
            ),
            (
                ("--remaining-five-hour", "nan", "--remaining-weekly", "1"),
                "InvalidOptionValue",
                "finite",
            ),
            (
                ("--remaining-five-hour", "inf", "--remaining-weekly", "1"),
                "InvalidOptionValue",
                "finite",
            ),
            (
                ("--remaining-five-hour", "4x", "--remaining-weekly", "1"),
                "InvalidOptionValue",
                "'4x'",
            ),
            (
                ("--remaining-five-hour", "4", "--remaining-weekly", "1", "--max-threads", "-1"),
                "InvalidOptionValue",
                ">= 0",
            ),
            (
                ("--remaining-five-hour", "4", "--remaining-weekly", "1", "--max-threads", "2.5"),
                "InvalidOptionValue",
                "whole number",
            ),
            (
                (
                    "--remaining-five-hour",
                    "4",
                    "--remaining-weekly",
                    "1",
                    "--prior-wave-instability",
                    "yes please",
                ),
                "InvalidOptionValue",
                "true, false",
            ),
            (
                ("--remaining-five-hour", "4", "--remaining-weekly", "1", "--format", "xml"),
                "InvalidOptionValue",
                "json, text",
            ),
            (
                ("--remaining-five-hour", "4", "--remaining-weekly"),
                "MissingOptionValue",
                "needs a value",
            ),
            (
                ("--remaining-five-hour", "4", "--remaining-five-hour", "5"),
                "DuplicateOption",
                "more than once",
            ),
            (("--bogus", "1"), "UnknownOption", "--bogus is not an option of `mesh budget`"),
            (("stray",), "UnexpectedArgument", "'stray'"),
        ],
    )
    def test_bad_flags(
        self, run_mesh: RunMesh, args: tuple[str, ...], kind: str, fragment: str
    ) -> None:
        """Every bad flag is a one-line error with exit 1 and nothing on stdout."""
        assert fragment in failed(run_mesh("budget", *args), kind)


class TestReplay:
    def test_example(self, run_mesh: RunMesh) -> None:
        """72/55/12/24 → waves [12, 12], rows [36, 36]."""
        document = ok(
            run_mesh(
                "replay",
                "--remaining-five-hour",
                "72",
                "--remaining-weekly",
                "55",
                "--max-threads",
                "12",
                "--ready-units",
                "24",
            )
        )
        assert (document["waves"], document["rows_per_lane"]) == ([12, 12], [36, 36])

    def test_thresholds_are_fixed(self, run_mesh: RunMesh) -> None:
        """Replay does not take the threshold flags."""
        failed(
            run_mesh(
                "replay",
                "--remaining-five-hour",
                "72",
                "--remaining-weekly",
                "55",
                "--ready-units",
                "2",
                "--linear-start-threshold",
                "50",
            ),
            "UnknownOption",
        )


class TestPlanCommands:
    def test_plan_sync_and_alias(self, run_mesh: RunMesh) -> None:
        """plan_sync and its alias plan-sync count the example plan's steps."""
        for name in ("plan_sync", "plan-sync"):
            document = ok(run_mesh(name, "--input-json", str(EXAMPLE_PLAN)))
            assert document == {
                "command": "plan_sync",
                "total_steps": 4,
                "pending": 2,
                "in_progress": 1,
                "completed": 1,
                "other": 0,
            }

    def test_slice_writes_output_creating_folders(self, run_mesh: RunMesh, tmp_path: Path) -> None:
        """Slice prints the document and writes the same document to --output-json."""
        out = tmp_path / "deep" / "er" / "units.json"
        document = ok(
            run_mesh("slice", "--input-json", str(EXAMPLE_PLAN), "--output-json", str(out))
        )
        assert document == json.loads(out.read_text())
        assert document["unit_count"] == 3

    def test_slice_refuses_to_overwrite_its_input(self, run_mesh: RunMesh, tmp_path: Path) -> None:
        """--output-json naming the input is a path collision; the plan is untouched."""
        plan = tmp_path / "plan.json"
        plan.write_text(EXAMPLE_PLAN.read_text())
        failed(
            run_mesh("slice", "--input-json", str(plan), "--output-json", str(plan)),
            "PathCollisionError",
        )
        assert EXAMPLE_PLAN.read_text() == plan.read_text()

    @pytest.mark.parametrize(
        ("content", "kind", "fragment"),
        [
            (None, "FileAccessError", "plan not found"),
            ("{not json", "ValidationError", "not JSON"),
            ('{"plan": [{"step": 1}]}', "ValidationError", "$.plan[0].step: expected string"),
            ('[{"id": "a", "deps": ["a"]}]', "PlanError", "dependency cycle: a -> a"),
            ('[{"id": "a", "deps": ["b"]}]', "PlanError", "unknown id 'b'"),
            ('{"a": 1, "a": 2}', "ValidationError", "duplicate key 'a'"),
            ("[1e999999]", "ValidationError", "not JSON"),
        ],
    )
    def test_bad_plans(
        self, run_mesh: RunMesh, tmp_path: Path, content: str | None, kind: str, fragment: str
    ) -> None:
        """Missing files, non-JSON, wrong shapes and cycles are one-line errors."""
        plan = tmp_path / "plan.json"
        if content is not None:
            plan.write_text(content)
        out = tmp_path / "units.json"
        assert fragment in failed(
            run_mesh("slice", "--input-json", str(plan), "--output-json", str(out)), kind
        )
        assert not out.exists()

    def test_invalid_utf8(self, run_mesh: RunMesh, tmp_path: Path) -> None:
        """A file that is not UTF-8 is an input error, not a crash."""
        plan = tmp_path / "plan.json"
        plan.write_bytes(b'[{"step": "\xff"}]')
        failed(run_mesh("plan_sync", "--input-json", str(plan)), "InputError")

    def test_directory_as_input(self, run_mesh: RunMesh, tmp_path: Path) -> None:
        """A directory given as a file is a file access error."""
        failed(run_mesh("plan_sync", "--input-json", str(tmp_path)), "FileAccessError")


class TestWaveAndRunCsv:
    @pytest.fixture(name="units_json")
    def _units_json(self, run_mesh: RunMesh, tmp_path: Path) -> Path:
        units = tmp_path / "units.json"
        ok(run_mesh("slice", "--input-json", str(EXAMPLE_PLAN), "--output-json", str(units)))
        return units

    def test_pipeline(self, run_mesh: RunMesh, tmp_path: Path, units_json: Path) -> None:
        """Slice → wave → run-csv on the example plan, end to end."""
        batch, out = tmp_path / "batch.csv", tmp_path / "batch.out.csv"
        wave = ok(
            run_mesh(
                "wave",
                "--units-json",
                str(units_json),
                "--csv-path",
                str(batch),
                "--max-active",
                "3",
            )
        )
        assert {
            "command": "wave",
            "lane": "coder",
            "triplet_width": 3,
            "units_in": 3,
            "units_selected": 2,
            "rows_emitted": 6,
            "csv_path": str(batch),
        } == wave
        report = ok(
            run_mesh(
                "run-csv",
                "--csv-path",
                str(batch),
                "--output-csv-path",
                str(out),
                "--max-workers",
                "4",
            )
        )
        assert (
            report["row_count"],
            report["max_concurrency"],
            report["effective_peak"],
            report["floor_result"],
        ) == (6, 4, 4, "pass")
        lines = out.read_text().splitlines()
        assert ",".join(mesh.batch.OUTPUT_COLUMNS) == lines[0]
        assert len(lines) == 7

    def test_bad_wave_flags(self, run_mesh: RunMesh, tmp_path: Path, units_json: Path) -> None:
        """An out-of-range width or unknown lane is an error; no CSV is written."""
        batch = tmp_path / "batch.csv"
        for flag, value in (("--triplet-width", "4"), ("--lane", "painter"), ("--max-active", "0")):
            failed(
                run_mesh(
                    "wave", "--units-json", str(units_json), "--csv-path", str(batch), flag, value
                ),
                "InvalidOptionValue",
            )
        assert not batch.exists()

    def test_run_csv_same_file(self, run_mesh: RunMesh, tmp_path: Path, units_json: Path) -> None:
        """IN and OUT resolving to one file is an error; the input is untouched."""
        batch = tmp_path / "batch.csv"
        ok(run_mesh("wave", "--units-json", str(units_json), "--csv-path", str(batch)))
        before = batch.read_bytes()
        alias = tmp_path / "sub" / ".." / "batch.csv"
        (tmp_path / "sub").mkdir()
        failed(
            run_mesh("run_csv", "--csv-path", str(batch), "--output-csv-path", str(alias)),
            "PathCollisionError",
        )
        assert before == batch.read_bytes()

    def test_fail_on_floor_writes_nothing(
        self, run_mesh: RunMesh, tmp_path: Path, units_json: Path
    ) -> None:
        """A failing floor gate under --fail-on-floor errors before OUT is written."""
        batch, out = tmp_path / "batch.csv", tmp_path / "out.csv"
        ok(
            run_mesh(
                "wave",
                "--units-json",
                str(units_json),
                "--csv-path",
                str(batch),
                "--max-active",
                "2",
            )
        )
        failed(
            run_mesh(
                "run_csv",
                "--csv-path",
                str(batch),
                "--output-csv-path",
                str(out),
                "--max-concurrency",
                "2",
                "--fail-on-floor",
            ),
            "FloorGateFailed",
        )
        assert not out.exists()
        failed(
            run_mesh(
                "run_csv",
                "--csv-path",
                str(batch),
                "--output-csv-path",
                str(out),
                "--fail-on-floor",
            ),
            "InputError",
        )
        failed(
            run_mesh(
                "run_csv",
                "--csv-path",
                str(batch),
                "--output-csv-path",
                str(out),
                "--max-concurrency",
                "2",
                "--max-workers",
                "3",
            ),
            "ConflictingOptions",
        )

    def test_existing_output_survives_a_failure(self, run_mesh: RunMesh, tmp_path: Path) -> None:
        """An invalid batch never replaces an existing output file."""
        batch, out = tmp_path / "batch.csv", tmp_path / "out.csv"
        batch.write_text("id,lane\nr,coder\n")
        out.write_text("precious\n")
        failed(
            run_mesh("run_csv", "--csv-path", str(batch), "--output-csv-path", str(out)),
            "CsvContractError",
        )
        assert out.read_text() == "precious\n"
        assert [out.name, batch.name] == sorted(p.name for p in tmp_path.iterdir())[::-1]

    def test_deps_csv(self, run_mesh: RunMesh, tmp_path: Path, units_json: Path) -> None:
        """A deps CSV is validated: pass when sound, an error on a cycle."""
        batch, out, deps = tmp_path / "batch.csv", tmp_path / "out.csv", tmp_path / "deps.csv"
        ok(run_mesh("wave", "--units-json", str(units_json), "--csv-path", str(batch)))
        deps.write_text("id,depends_on,interactive_lead\nunit-001-coder-2,unit-001-coder-1,false\n")
        report = ok(
            run_mesh(
                "run_csv",
                "--csv-path",
                str(batch),
                "--output-csv-path",
                str(out),
                "--deps-csv",
                str(deps),
            )
        )
        assert report["deps_check_status"] == "pass"
        deps.write_text("id,depends_on\na,b\nb,a\n")
        failed(
            run_mesh(
                "run_csv",
                "--csv-path",
                str(batch),
                "--output-csv-path",
                str(out),
                "--deps-csv",
                str(deps),
            ),
            "CsvContractError",
        )


class TestLedger:
    def test_occurred_events(self, run_mesh: RunMesh, tmp_path: Path) -> None:
        """Only occurred events are kept, in order; output is valid JSON."""
        ledger = tmp_path / "ledger.json"
        ledger.write_text(json.dumps({"waves": 2, "retries": 0, "cas": "none", "notes": "x}{"}))
        assert ok(run_mesh("ledger", "--input-json", str(ledger))) == {
            "command": "ledger",
            "events": {"waves": 2, "notes": "x}{"},
        }

    def test_non_object(self, run_mesh: RunMesh, tmp_path: Path) -> None:
        """A ledger that is not an object is an error."""
        ledger = tmp_path / "ledger.json"
        ledger.write_text("[1]")
        failed(run_mesh("ledger", "--input-json", str(ledger)), "ValidationError")


class TestInProcess:
    def test_internal_errors_stay_one_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Even a bug in mesh is one line on stderr, not a traceback."""

        def broken(**_: object) -> dict[str, object]:
            message = "boom\nsecond line"
            raise RuntimeError(message)

        command = _cli.COMMANDS["ledger"]
        monkeypatch.setitem(_cli.COMMANDS, "ledger", attrs.evolve(command, run=broken))
        code, out, err = _cli.run(["ledger", "--input-json", "x"])
        assert (code, out) == (1, "")
        expected = "error: InternalError: RuntimeError: boom second line"
        assert f"{expected} (set MESH_DEBUG=1 for details)\n" == err

    def test_main_writes_streams(self, capsys: pytest.CaptureFixture[str]) -> None:
        """main() returns the exit code and writes stdout/stderr."""
        assert _cli.main(["budget", "--remaining-five-hour", "40", "--remaining-weekly", "28"]) == 0
        assert '"max_active_units": 9' in capsys.readouterr().out
        assert _cli.main(["budget"]) == 1
        assert "MissingRequiredOption" in capsys.readouterr().err


class TestEdges:
    def test_overflowing_number(self) -> None:
        """A number too large for a float is not finite, so it is refused."""
        code, _, err = _cli.run(
            ["budget", "--remaining-five-hour", "1e999", "--remaining-weekly", "5"]
        )
        assert code == 1
        assert "finite" in err

    def test_empty_path_value(self) -> None:
        """An empty path is an invalid value, not 'the current folder'."""
        code, _, err = _cli.run(["plan_sync", "--input-json="])
        assert (code, err) == (
            1,
            "error: InvalidOptionValue: --input-json expects a non-empty value, got ''\n",
        )

    def test_switch_takes_no_value(self) -> None:
        """--fail-on-floor=yes is an error: the switch takes no value."""
        code, _, err = _cli.run(
            ["run_csv", "--csv-path", "a", "--output-csv-path", "b", "--fail-on-floor=yes"]
        )
        assert (code, err) == (1, "error: UnexpectedOptionValue: --fail-on-floor takes no value\n")

    def test_mesh_debug_shows_the_traceback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """MESH_DEBUG=1 lets a bug's exception through for debugging."""

        def broken(**_: object) -> dict[str, object]:
            raise ZeroDivisionError

        monkeypatch.setenv("MESH_DEBUG", "1")
        monkeypatch.setitem(
            _cli.COMMANDS, "ledger", attrs.evolve(_cli.COMMANDS["ledger"], run=broken)
        )
        with pytest.raises(ZeroDivisionError):
            _cli.run(["ledger", "--input-json", "x"])

    def test_interrupt(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Ctrl-C exits 130 with one line, no traceback."""

        def interrupted(_: object) -> tuple[int, str, str]:
            raise KeyboardInterrupt

        monkeypatch.setattr(_cli, "run", interrupted)
        assert _cli.main(["budget"]) == 130
        assert capsys.readouterr().err == "error: Interrupted: stopped by the user\n"

    def test_closed_stdout(self, mesh_command: list[str]) -> None:
        """A reader that goes away (`mesh --help | head -c0`) causes no traceback."""
        process = subprocess.Popen(
            [*mesh_command, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None
        process.stdout.close()
        _, err = process.communicate(timeout=30)
        assert process.returncode in {0, 1}
        assert b"Traceback" not in err

    def test_stdout_closed_from_the_start(self, mesh_command: list[str]) -> None:
        """`mesh status RUN >&-`: one line on stderr and exit 1, before the command runs."""
        process = subprocess.run(
            ["sh", "-c", 'exec "$0" "$@" >&-', *mesh_command, "--version"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert (
            process.returncode,
            process.stderr,
        ) == (1, b"error: OutputError: stdout is closed: nothing can be printed\n")

    def test_stdout_closed_and_no_stderr(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With neither stream there is no one to tell: only the exit status says it."""
        monkeypatch.setattr(sys, "stdout", None)
        monkeypatch.setattr(sys, "stderr", None)
        assert _cli.main(["--version"]) == _cli.EXIT_ERROR

    @pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
    def test_full_stdout(self, mesh_command: list[str]) -> None:
        """`mesh --help > /dev/full`: one line naming the problem, exit 1, no traceback."""
        with Path("/dev/full").open("wb") as full:
            process = subprocess.run(
                [*mesh_command, "--help"],
                stdout=full,
                stderr=subprocess.PIPE,
                check=False,
                timeout=60,
            )
        assert (
            process.returncode,
            process.stderr,
        ) == (1, b"error: OutputError: cannot write to stdout: No space left on device\n")


def one_line_error(argv: list[str]) -> str:
    """Run in-process; the command must fail with exactly one line on stderr."""
    code, out, err = _cli.run(argv)
    assert (code, out) == (1, ""), err
    assert err.count("\n") == 1
    return err


class TestDidYouMean:
    def test_misspelt_flag(self) -> None:
        """An unknown flag close to a real one names it, in the same line."""
        err = one_line_error(["budget", "--remaining-five-hour", "40", "--remaining-weeky", "28"])
        assert err == (
            "error: UnknownOption: --remaining-weeky is not an option of `mesh budget` "
            "(did you mean --remaining-weekly?)\n"
        )

    def test_abbreviation_is_not_a_flag(self) -> None:
        """Prefixes are not flags (argparse's abbreviations are off); the flag is suggested."""
        err = one_line_error(["plan_sync", "--input-j", str(EXAMPLE_PLAN)])
        assert err.endswith("(did you mean --input-json?)\n")

    def test_nothing_close(self) -> None:
        """A flag like no other gets no suggestion."""
        err = one_line_error(["budget", "--zzzzzz", "1"])
        assert err == "error: UnknownOption: --zzzzzz is not an option of `mesh budget`\n"

    def test_help_is_suggested(self) -> None:
        """--hepl is close to --help, which every command takes."""
        assert one_line_error(["slice", "--hepl"]).endswith("(did you mean --help?)\n")

    @pytest.mark.parametrize(
        ("typed", "meant"),
        [
            ("bugdet", "budget"),
            ("run_cvs", "run_csv"),
            ("plan-snyc", "plan-sync"),
            ("--verison", "--version"),
            ("--hlep", "--help"),
        ],
    )
    def test_misspelt_command(self, typed: str, meant: str) -> None:
        """An unknown command close to a command, alias or option names it; still exit 2."""
        code, out, err = _cli.run([typed])
        assert (code, out) == (2, "")
        assert err == f"error: unknown command {typed!r} (did you mean {meant}?)\n\n{_cli.usage()}"

    def test_unknown_command_without_match(self) -> None:
        """No suggestion when nothing is close."""
        _, _, err = _cli.run(["zzzzzz"])
        assert err == f"error: unknown command 'zzzzzz'\n\n{_cli.usage()}"


class TestArgumentReading:
    """argparse's own reading is neutralised: the original contract's rules hold."""

    def test_values_starting_with_a_dash(self) -> None:
        """The word after a flag is its value unless it starts with --."""
        assert "plan not found: -plan.json" in one_line_error(
            ["plan_sync", "--input-json", "-plan.json"]
        )
        assert "got '-1'" in one_line_error(
            [
                "budget",
                "--remaining-five-hour",
                "4",
                "--remaining-weekly",
                "1",
                "--max-threads",
                "-1",
            ]
        )

    def test_a_flag_is_not_a_value(self) -> None:
        """A flag followed by another flag has no value, whether long or short."""
        err = one_line_error(["run_csv", "--csv-path", "--output-csv-path", "out.csv"])
        assert err == "error: MissingOptionValue: --csv-path needs a value\n"
        err = one_line_error(["report", "RUN", "--runs", "-o", "page.html"])
        assert err == "error: MissingOptionValue: --runs needs a value\n"

    def test_short_flag_is_a_word_of_its_own(self, tmp_path: Path) -> None:
        """-oFILE is not -o FILE, and -o=FILE is not -o FILE (as in the original)."""
        for spelling in ("-opage.html", "-o=page.html"):
            err = one_line_error(["report", str(tmp_path), spelling])
            assert f"error: UnexpectedArgument: unexpected argument {spelling!r}\n" == err

    def test_repeat_through_short_and_long_spelling(self) -> None:
        """-o and --output are one flag: giving both is a repeat, named by the long name."""
        err = one_line_error(["report", "RUN", "-o", "a.html", "--output", "b.html"])
        assert err == "error: DuplicateOption: --output is given more than once\n"

    def test_double_dash_is_not_the_end_of_options(self) -> None:
        """A bare -- is an unknown flag, as in the original, not argparse's separator."""
        err = one_line_error(["status", "--", "run-id"])
        assert err == "error: UnknownOption: -- is not an option of `mesh status`\n"

    def test_flag_with_a_space_is_still_a_flag(self) -> None:
        """A word starting with -- is a flag, even with a space in it (argparse says argument)."""
        err = one_line_error(["status", "--x y"])
        assert err == "error: UnknownOption: --x y is not an option of `mesh status`\n"

    def test_no_argument_files(self, tmp_path: Path) -> None:
        """@file is a plain word: argparse's argument files are off."""
        arguments = tmp_path / "arguments"
        arguments.write_text(f"--input-json\n{EXAMPLE_PLAN}\n")
        err = one_line_error(["plan_sync", f"@{arguments}"])
        assert err.startswith("error: UnexpectedArgument: unexpected argument '@")

    def test_argument_starting_with_a_dash(self, tmp_path: Path) -> None:
        """A command's argument may start with one dash, before or after the flags."""
        for argv in (
            ["status", "-odd", "--runs", str(tmp_path)],
            ["status", "--runs", str(tmp_path), "-odd"],
        ):
            assert one_line_error(argv).startswith("error: InputError: no run -odd ")

    def test_argument_too_many(self) -> None:
        """A second argument is unexpected; so is any for a command that takes none."""
        err = one_line_error(["status", "a", "b"])
        assert err == "error: UnexpectedArgument: unexpected argument 'b'\n"
        err = one_line_error(["budget", "-x"])
        assert err == "error: UnexpectedArgument: unexpected argument '-x'\n"

    @pytest.mark.parametrize(
        ("argv", "kind"),
        [
            (["--remaining-five-hour", "nan", "--bogus"], "InvalidOptionValue"),
            (["--bogus", "--remaining-five-hour", "nan"], "UnknownOption"),
            (["--max-threads", "x", "--max-threads", "--"], "InvalidOptionValue"),
            (["--max-threads", "1", "--max-threads"], "DuplicateOption"),
            (["--remaining-weekly", "--max-threads", "x"], "MissingOptionValue"),
            (["stray", "--remaining-five-hour", "nan"], "UnexpectedArgument"),
        ],
    )
    def test_first_problem_in_argument_order(self, argv: list[str], kind: str) -> None:
        """When several things are wrong, the first in argument order is reported."""
        assert one_line_error(["budget", *argv]).startswith(f"error: {kind}: ")


class TestParserNeverPrints:
    def test_argparse_complaints_are_one_line_errors(self) -> None:
        """Were argparse to complain or exit itself, it would raise, not print and exit."""
        parser = _parser.build_parser(_cli.COMMANDS, _cli.ALIASES)
        with pytest.raises(mesh.OptionError, match=r"^mesh: unrecognized arguments: x y$") as info:
            parser.error("unrecognized arguments:\n x y")
        assert info.value.kind == "UsageError"
        with pytest.raises(mesh.OptionError, match=r"^mesh: stopped with status 2$"):
            parser.exit(2)
        with pytest.raises(mesh.OptionError, match=r"^mesh: bye$"):
            parser.exit(0, "bye\n")


class TestCompletion:
    @pytest.fixture(name="script", params=["bash", "zsh"])
    def _script(self, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
        shell = str(request.param)
        code, out, err = _cli.run(["completion", shell])
        assert (code, err) == (0, "")
        path = tmp_path / f"mesh.{shell}"
        path.write_text(out)
        return shell, path

    def test_every_command_and_flag_appears(self, script: tuple[str, Path]) -> None:
        """Commands, aliases, flags and short spellings: all come from the parser's table."""
        text = script[1].read_text()
        words = set(re.findall(r"[\w-]+", text))
        for name, command in _cli.COMMANDS.items():
            assert name in words
            for flag in command.flags:
                assert set(flag.spellings) <= words, flag.name
        assert set(_cli.ALIASES) <= words

    def test_words_need_no_quoting(self) -> None:
        """Every word offered is a plain shell word, so the scripts' word lists stay simple."""
        words = {*_cli.COMMANDS, *_cli.ALIASES}
        for command in _cli.COMMANDS.values():
            for flag in (*command.flags, *filter(None, [command.positional])):
                words.update(flag.spellings)
                if isinstance(flag.parse, _options.Choice):
                    words.update(flag.parse.allowed)
        assert all(re.fullmatch(r"[\w.-]+", word) for word in words)

    @pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
    @pytest.mark.parametrize(
        ("words", "expected"),
        [
            (["bu"], ["budget"]),
            (["plan"], ["plan_sync", "plan-sync"]),
            (["budget", "--remaining-f"], ["--remaining-five-hour"]),
            (["budget", "--format", ""], ["json", "text"]),
            (["wave", "--lane", "f"], ["fixer"]),
            (["run", "--delivery", ""], ["patch_first", "commit_first"]),
            (["run-csv", "--max-"], ["--max-concurrency", "--max-workers"]),
            (["report", "RUN", "-"], ["--output", "-o", "--runs", "-h", "--help"]),
            (["completion", ""], ["-h", "--help", "bash", "zsh"]),
            (["slice", "--input-json", ""], []),
            (["nope", "--"], []),
        ],
    )
    def test_bash_candidates(self, tmp_path: Path, words: list[str], expected: list[str]) -> None:
        """Sourced in bash, the completion function offers what the command line accepts."""
        script = tmp_path / "mesh.bash"
        script.write_text(_cli.run(["completion", "bash"])[1])
        program = (
            'source "$1"; shift; COMP_WORDS=(mesh "$@"); COMP_CWORD=$#; _mesh; '
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        shown = subprocess.run(
            ["bash", "-c", program, "bash", str(script), *words],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stderr == ""
        assert expected == [line for line in shown.stdout.splitlines() if line]

    @pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
    @pytest.mark.parametrize(
        ("words", "expected"),
        [
            (["b"], [*_cli.COMMANDS, *_cli.ALIASES, "-h", "--help", "help", "--version", "-V"]),
            (["budget", "--format", ""], ["json", "text"]),
            (["plan-sync", "--input-json", ""], ["<files>"]),
            (["completion", ""], ["bash", "zsh", "-h", "--help"]),
            (["status", ""], ["<files>", "--runs", "-h", "--help"]),
            (["report", "-"], ["--output", "-o", "--runs", "-h", "--help"]),
        ],
    )
    def test_zsh_candidates(self, tmp_path: Path, words: list[str], expected: list[str]) -> None:
        """With zsh's completion helpers stubbed, the function offers the expected words."""
        script = tmp_path / "mesh.zsh"
        script.write_text(_cli.run(["completion", "zsh"])[1])
        program = """
            compdef() { [[ $* == '_mesh mesh' ]] }
            _describe() { local name=${@[-1]}; print -rl -- ${${(P)name}%%:*} }
            compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@" }
            _files() { print -r -- '<files>' }
            source "$1"; shift
            words=(mesh "$@"); CURRENT=$#words; PREFIX=${words[-1]}
            _mesh
        """
        shown = subprocess.run(
            ["zsh", "-f", "-c", program, "zsh", str(script), *words],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stderr == ""
        assert expected == shown.stdout.splitlines()

    def test_unknown_shell(self) -> None:
        """Only bash and zsh are known; the argument is required."""
        assert (
            one_line_error(["completion", "fish"])
        ) == "error: InvalidOptionValue: SHELL expects one of bash, zsh, got 'fish'\n"
        assert one_line_error(["completion"]) == "error: MissingArgument: SHELL is required\n"


class TestStartUp:
    """Which modules each kind of command loads (timings are for `python -m bench cli`)."""

    ENGINE = ("anyio", "structlog", "transitions", "rich", "mesh.cli._run_command")

    def loaded(self, argv: list[str], cwd: Path) -> set[str]:
        probe = (
            "import json, sys\n"
            "from mesh.cli import _cli\n"
            f"code, _, err = _cli.run({argv!r})\n"
            "assert code == 0, err\n"
            "print(json.dumps(sorted(sys.modules)))\n"
        )
        shown = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=cwd
        )
        return set(json.loads(shown.stdout))

    def test_help_loads_the_standard_library_and_attrs(self, tmp_path: Path) -> None:
        """`mesh --help` loads no dependency but attrs, and no command."""
        loaded = self.loaded(["--help"], tmp_path)
        assert set() == loaded & {*self.ENGINE, "cattrs", "wcmatch", "mesh.commands"}
        assert "attrs" in loaded

    @pytest.mark.parametrize(
        "argv",
        [
            ["budget", "--remaining-five-hour", "40", "--remaining-weekly", "28"],
            ["plan_sync", "--input-json", str(EXAMPLE_PLAN)],
            ["slice", "--input-json", str(EXAMPLE_PLAN), "--output-json", "units.json"],
            ["completion", "bash"],
        ],
        ids=lambda argv: argv[0],
    )
    def test_helper_commands_do_not_load_the_engine(self, tmp_path: Path, argv: list[str]) -> None:
        """The helper commands never import the engine or its dependencies."""
        assert set() == self.loaded(argv, tmp_path) & set(self.ENGINE)


class TestRunCsvOutputFolders:
    def test_missing_folders_are_created(self, tmp_path: Path) -> None:
        """--output-csv-path creates missing parent folders, as slice and wave do."""
        units, batch = tmp_path / "units.json", tmp_path / "batch.csv"
        out = tmp_path / "deep" / "er" / "out.csv"
        for argv in (
            ["slice", "--input-json", str(EXAMPLE_PLAN), "--output-json", str(units)],
            ["wave", "--units-json", str(units), "--csv-path", str(batch)],
            ["run_csv", "--csv-path", str(batch), "--output-csv-path", str(out)],
        ):
            code, _, err = _cli.run(argv)
            assert (code, err) == (0, "")
        assert len(out.read_text().splitlines()) == 4

    def test_no_folder_is_made_when_the_batch_is_bad(self, tmp_path: Path) -> None:
        """A failing run_csv writes nothing: not even the output's folders."""
        batch = tmp_path / "batch.csv"
        batch.write_text("id,lane\nr,coder\n")
        out = tmp_path / "deep" / "out.csv"
        one_line_error(["run_csv", "--csv-path", str(batch), "--output-csv-path", str(out)])
        assert not out.parent.exists()
