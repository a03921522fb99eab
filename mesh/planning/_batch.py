"""
The streaming-batch CSV contract: parsing, validation, deps and the floor gate.

Pure: CSV text in, records out (the standard csv module over in-memory text,
so quoted commas and embedded newlines round-trip exactly).
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Final

from ..contracts._enums import FloorResult, Lane
from ..contracts._errors import CsvContractError, FloorGateFailed, InputError, PlanError
from ..contracts._records import (
    BATCH_COLUMNS,
    REQUIRED_BATCH_COLUMNS,
    BatchRow,
    DepsRow,
    OutputRow,
    PreparedBatch,
)
from ._plan import check_dependencies

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "floor_gate",
    "format_csv",
    "parse_batch_csv",
    "parse_deps_csv",
    "prepare_batch",
    "validate_deps",
]

DEPS_COLUMNS: Final = ("id", "depends_on", "interactive_lead")
_TRUE: Final = frozenset({"true", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "n", ""})


def format_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Render rows as CSV text with standard quoting (RFC 4180 line endings)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _read_table(text: str, *, subject: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows; blank lines are dropped."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise CsvContractError(f"{subject}: empty file, expected a header row")
        records: list[tuple[int, list[str]]] = []
        line = reader.line_num
        for cells in reader:
            if cells and any(cell.strip() for cell in cells):
                records.append((line + 1, cells))
            line = reader.line_num
    except csv.Error as exc:
        raise CsvContractError(f"{subject}: line {reader.line_num}: {exc}") from None
    header = [name.strip() for name in header]
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0].removeprefix("\ufeff")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise CsvContractError(f"{subject}: duplicate columns {', '.join(duplicates)}")
    for line, cells in records:
        if len(cells) != len(header):
            raise CsvContractError(
                f"{subject}: line {line} has {len(cells)} cells, the header has {len(header)}"
            )
    return header, records


def parse_batch_csv(text: str) -> tuple[BatchRow, ...]:
    """
    Parse a batch CSV: the 15 required columns (``base_sha`` optional), a known lane per row.

    Rows with an empty ``id`` are skipped; extra columns are allowed and ignored.

    Raises:
        CsvContractError: On missing or duplicate columns, ragged rows, malformed
            quoting, or an unknown lane.

    .. versionadded:: 0.1.0
    """
    header, records = _read_table(text, subject="batch CSV")
    missing = [column for column in REQUIRED_BATCH_COLUMNS if column not in header]
    if missing:
        raise CsvContractError(f"batch CSV: missing required columns {', '.join(missing)}")
    rows: list[BatchRow] = []
    for line, cells in records:
        cell = dict(zip(header, cells, strict=True))
        if not cell["id"].strip():
            continue
        try:
            lane = Lane(cell["lane"])
        except ValueError:
            raise CsvContractError(
                f"batch CSV: line {line}: unknown lane {cell['lane']!r} "
                f"(expected one of {', '.join(Lane)})"
            ) from None
        values = {column: cell.get(column, "") for column in BATCH_COLUMNS if column != "lane"}
        values["base_sha"] = values["base_sha"] or "HEAD"
        rows.append(BatchRow(lane=lane, **values))
    return tuple(rows)


def _parse_bool(text: str, *, where: str) -> bool:
    folded = text.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise CsvContractError(f"{where}: expected true/false, got {text!r}")


def parse_deps_csv(text: str) -> tuple[DepsRow, ...]:
    """
    Parse a deps CSV (``id,depends_on[,interactive_lead]``; ``depends_on`` split on ``;`` or ``,``).

    Raises:
        CsvContractError: On missing columns, ragged rows, bad booleans or empty ids.

    .. versionadded:: 0.1.0
    """
    header, records = _read_table(text, subject="deps CSV")
    missing = [column for column in DEPS_COLUMNS[:2] if column not in header]
    if missing:
        raise CsvContractError(f"deps CSV: missing required columns {', '.join(missing)}")
    rows: list[DepsRow] = []
    for line, cells in records:
        cell = dict(zip(header, cells, strict=True))
        unit_id = cell["id"].strip()
        if not unit_id:
            raise CsvContractError(f"deps CSV: line {line}: empty id")
        depends_on = cell["depends_on"].replace(",", ";").split(";")
        rows.append(
            DepsRow(
                id=unit_id,
                depends_on=tuple(dict.fromkeys(dep.strip() for dep in depends_on if dep.strip())),
                interactive_lead=_parse_bool(
                    cell.get("interactive_lead", ""),
                    where=f"deps CSV: line {line}: interactive_lead",
                ),
            )
        )
    return tuple(rows)


def validate_deps(deps: Sequence[DepsRow], *, known_ids: Iterable[str] = ()) -> None:
    """
    Check a deps table: unique ids, known dependencies, no cycles, leads without deps.

    Args:
        deps: The parsed deps rows.
        known_ids: Further ids a dependency may name (the batch's row ids).

    Raises:
        CsvContractError: Naming the problem.

    .. versionadded:: 0.1.0
    """
    for row in deps:
        if row.interactive_lead and row.depends_on:
            raise CsvContractError(
                f"deps CSV: interactive lead {row.id!r} must not have dependencies "
                f"(has {', '.join(row.depends_on)})"
            )
    declared = {row.id for row in deps}
    extra = [(name, (), f"batch row {name!r}") for name in dict.fromkeys(known_ids)]
    nodes = [(row.id, row.depends_on, f"deps row {row.id!r}") for row in deps]
    try:
        check_dependencies([*nodes, *(node for node in extra if node[0] not in declared)])
    except PlanError as exc:
        raise CsvContractError(f"deps CSV: {exc.message}") from None


def floor_gate(
    *, concurrency: int, runnable: int, floor_threshold: int
) -> tuple[int, bool, FloorResult]:
    """
    The concurrency floor gate: ``(effective_peak, applicable, result)``.

    ``effective_peak = min(concurrency, runnable)``; the gate applies only when
    at least ``floor_threshold`` units are runnable, and passes when the peak
    reaches the floor.

    .. versionadded:: 0.1.0
    """
    peak = min(concurrency, runnable)
    if runnable < floor_threshold:
        return peak, False, FloorResult.NOT_APPLICABLE
    return peak, True, FloorResult.PASS if peak >= floor_threshold else FloorResult.FAIL


def _positive(name: str, value: int | None, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def prepare_batch(
    csv_text: str,
    *,
    max_concurrency: int | None = None,
    runnable_units: int | None = None,
    floor_threshold: int = 3,
    fail_on_floor: bool = False,
    deps_csv_text: str | None = None,
) -> PreparedBatch:
    """
    Validate a batch CSV and prepare its output rows (the pure core of ``run_csv``).

    Args:
        csv_text: The batch CSV.
        max_concurrency: Workers available; defaults to the row count.
        runnable_units: Units runnable now; defaults to the row count.
        floor_threshold: The floor gate's threshold (>= 1).
        fail_on_floor: Raise when the floor gate fails (needs ``max_concurrency``).
        deps_csv_text: An optional deps CSV to validate against the batch.

    Raises:
        CsvContractError: When either CSV breaks its contract.
        FloorGateFailed: When ``fail_on_floor`` and the gate fails.
        InputError: On out-of-range numbers, or ``fail_on_floor`` without
            ``max_concurrency``.

    .. versionadded:: 0.1.0
    """
    _positive("max_concurrency", max_concurrency, minimum=1)
    _positive("runnable_units", runnable_units, minimum=0)
    _positive("floor_threshold", floor_threshold, minimum=1)
    if fail_on_floor and max_concurrency is None:
        raise InputError("fail_on_floor needs max_concurrency (--max-concurrency or --max-workers)")
    rows = parse_batch_csv(csv_text)
    deps_status = "skipped"
    if deps_csv_text is not None:
        validate_deps(parse_deps_csv(deps_csv_text), known_ids=(row.id for row in rows))
        deps_status = "pass"
    concurrency = max_concurrency if max_concurrency is not None else len(rows)
    runnable = runnable_units if runnable_units is not None else len(rows)
    peak, applicable, result = floor_gate(
        concurrency=concurrency, runnable=runnable, floor_threshold=floor_threshold
    )
    if fail_on_floor and result is FloorResult.FAIL:
        raise FloorGateFailed(
            f"effective peak {peak} is below the floor threshold {floor_threshold}"
        )
    output_rows = tuple(
        OutputRow(
            id=row.id,
            candidate_id=row.candidate_id,
            triplet_index=row.triplet_index,
            lane=row.lane,
            write_scope=row.write_scope,
            risk_tier=row.risk_tier,
            base_sha=row.base_sha,
        )
        for row in rows
    )
    return PreparedBatch(
        rows=rows,
        output_rows=output_rows,
        max_concurrency=concurrency,
        runnable_units=runnable,
        effective_peak=peak,
        floor_threshold=floor_threshold,
        floor_applicable=applicable,
        floor_result=result,
        deps_check_status=deps_status,
    )
