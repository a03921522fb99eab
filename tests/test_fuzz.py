"""
Fuzzing the parsers and the command line: no input may produce a traceback.

Every parser must return a result or raise a `mesh.MeshError`; every command
must exit 0 with one JSON document or exit 1 with one line on stderr.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mesh
import mesh.batch
from mesh.cli import _cli
from mesh.contracts._convert import loads_json

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# Every key a step may have, plus keys of the other documents, so the fuzzer
# often builds documents that are almost right.
PLAN_KEYS = [
    *(field.name for field in attrs.fields(mesh.PlanStep)),
    *("attempt", "plan", "steps", "units", "explanation", "lane", "decision"),
]
WORDS = [
    "pending",
    "in_progress",
    "completed",
    "low",
    "med",
    "high",
    "a",
    "b",
    "unit-001",
    "coder",
    "prover",
    "fixer",
    "accept",
    "pass",
    "none",
    "",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS)
    | st.text(max_size=8)
)
keys = st.sampled_from(PLAN_KEYS) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
plans = st.one_of(
    json_values,
    st.lists(st.dictionaries(keys, json_values, max_size=6), max_size=5),
    st.fixed_dictionaries(
        {"plan": st.lists(st.dictionaries(keys, json_values, max_size=6), max_size=5)}
    ),
)

PARSERS: dict[str, Callable[[object], object]] = {
    "parse_plan": mesh.parse_plan,
    "plan_sync": mesh.plan_sync,
    "slice_plan": mesh.slice_plan,
    "parse_units": mesh.parse_units,
    "select_wave": lambda payload: mesh.select_wave(payload, max_active=3),
    "occurred_events": mesh.occurred_events,
    "parse_worker_result": mesh.parse_worker_result,
}


def survives(parse: Callable[[object], object], payload: object) -> None:
    failure: mesh.MeshError | None = None
    try:
        parse(payload)
    except mesh.MeshError as exc:
        failure = exc
    if failure is not None:
        assert failure.message
        assert isinstance(failure.code, mesh.FailureCode)


class TestParsersNeverCrash:
    @pytest.mark.parametrize("name", sorted(PARSERS))
    @given(payload=plans)
    def test_json_documents(self, name: str, payload: object) -> None:
        """Any JSON value gives a result or a MeshError."""
        survives(PARSERS[name], payload)

    @given(text=st.text(max_size=200))
    def test_json_text(self, text: str) -> None:
        """Any text gives a document or a ValidationError."""
        survives(lambda t: loads_json(str(t), subject="fuzz"), text)
        survives(mesh.parse_worker_result, text)

    @given(
        text=st.lists(
            st.sampled_from([*'ab,"\n\r ;\x00', "coder", "id", "lane", "true"]), max_size=40
        ).map("".join)
    )
    def test_csv_text(self, text: str) -> None:
        """Any text gives batch rows, deps rows, or a MeshError."""
        header = ",".join(mesh.batch.BATCH_COLUMNS) + "\n"
        for candidate in (text, header + text):
            survives(lambda t: mesh.batch.parse_batch_csv(str(t)), candidate)
            survives(
                lambda t: mesh.batch.prepare_batch(str(t), max_concurrency=2, fail_on_floor=True),
                candidate,
            )
        survives(
            lambda t: mesh.batch.validate_deps(mesh.batch.parse_deps_csv(str(t))),
            "id,depends_on\n" + text,
        )


def check_outcome(code: int, out: str, err: str) -> None:
    assert "InternalError" not in err, err
    if code == 0:
        json.loads(out) if out.startswith("{") else None
        assert err == ""
    else:
        assert code == 1
        assert out == ""
        assert len(err.splitlines()) == 1
        assert err.startswith("error: ")


FILE_COMMANDS = [
    ["plan_sync", "--input-json", "{input}"],
    ["slice", "--input-json", "{input}", "--output-json", "{output}"],
    ["wave", "--units-json", "{input}", "--csv-path", "{output}", "--max-active", "2"],
    ["run_csv", "--csv-path", "{input}", "--output-csv-path", "{output}"],
    ["run_csv", "--csv-path", "{csv}", "--output-csv-path", "{output}", "--deps-csv", "{input}"],
    ["ledger", "--input-json", "{input}"],
]


class TestCommandLineNeverCrashes:
    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        content=st.one_of(
            st.binary(max_size=120),
            plans.map(lambda value: json.dumps(value).encode()),
            st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
        ),
        command=st.sampled_from(FILE_COMMANDS),
    )
    def test_file_contents(self, tmp_path: Path, content: bytes, command: list[str]) -> None:
        """Any file content is a result or a one-line error; failures write no output."""
        source, target = tmp_path / "input", tmp_path / "output"
        source.write_bytes(content)
        target.unlink(missing_ok=True)
        valid_csv = tmp_path / "valid.csv"
        valid_csv.write_text(",".join(mesh.batch.BATCH_COLUMNS) + "\n")
        argv = [a.format(input=source, output=target, csv=valid_csv) for a in command]
        code, out, err = _cli.run(argv)
        check_outcome(code, out, err)
        if code != 0:
            assert not target.exists()

    @given(
        argv=st.lists(
            st.sampled_from(
                [
                    "budget",
                    "replay",
                    "--remaining-five-hour",
                    "--remaining-weekly",
                    "--max-threads",
                    "--ready-units",
                    "--format",
                    "--prior-wave-instability",
                    "--previous-triplet-width",
                    "--consecutive-clean-waves",
                    "text",
                    "json",
                    "40",
                    "-1",
                    "1e3",
                    "nan",
                    "0",
                    "true",
                    "",
                    "=",
                    "--remaining-weekly=5",
                    "--max-threads=",
                    "-h",
                ]
            )
            | st.text(max_size=6),
            max_size=8,
        )
    )
    def test_argument_lists(self, argv: list[str]) -> None:
        """Any argument list prints help, a document or a one-line error (or exits 2)."""
        code, out, err = _cli.run(argv)
        if code == 2:
            assert err.startswith("error: unknown command")
            return
        check_outcome(code, out, err)
