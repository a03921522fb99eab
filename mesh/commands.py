"""
The ``mesh`` command line as Python functions.

Each function takes the command's options as keyword arguments (flag names with
underscores), does the command's file I/O, and returns the exact JSON document
the command prints (``run`` and ``demo`` return a `RunReport`: the text they
print, the exit code, and the finished run). The CLI is a thin layer over these; the pure cores
(`mesh.budget_policy`, `mesh.slice_plan`, ...) take and return records instead.

    >>> import mesh.commands
    >>> mesh.commands.budget(remaining_five_hour=40, remaining_weekly=28)["max_active_units"]
    9

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from .contracts._convert import dumps_json, loads_json
from .contracts._enums import Lane
from .contracts._errors import OptionError
from .contracts._files import StrPath, atomic_write_text, ensure_distinct, read_text
from .contracts._ledger import occurred_events
from .contracts._records import BATCH_COLUMNS, OUTPUT_COLUMNS
from .planning._batch import format_csv, prepare_batch
from .planning._budget import budget_policy
from .planning._budget import replay as _replay
from .planning._plan import plan_sync as _plan_sync
from .planning._plan import slice_plan
from .planning._wave import select_wave

__all__ = [
    "RunReport",
    "budget",
    "demo",
    "ledger",
    "plan_sync",
    "replay",
    "report",
    "resume",
    "run",
    "run_csv",
    "slice",
    "status",
    "wave",
]

if TYPE_CHECKING:
    from .cli._run_command import RunReport, demo, report, resume, run, status

_DEFAULT_MAX_THREADS: Final = 12
# The whole-run commands load the engine (anyio, structlog, transitions, rich, ...): they
# load on first use, so the helper commands and `mesh --help` start without it.
_ENGINE_COMMANDS: Final = frozenset({"RunReport", "demo", "report", "resume", "run", "status"})


# Hidden from type checkers, so a misspelt name stays a type error.
if not TYPE_CHECKING:  # pragma: no branch - true whenever the module runs

    def __getattr__(name: str) -> object:
        if name not in _ENGINE_COMMANDS:
            raise AttributeError(f"module 'mesh.commands' has no attribute {name!r}")
        value = getattr(importlib.import_module(".cli._run_command", __package__), name)
        globals()[name] = value
        return value


def _read_json(path: StrPath, *, what: str) -> object:
    return loads_json(read_text(path, what=what), subject=what)


def budget(
    *,
    remaining_five_hour: float,
    remaining_weekly: float,
    max_threads: int = _DEFAULT_MAX_THREADS,
    linear_start_threshold: float = 33.0,
    single_agent_threshold: float = 10.0,
    scaleout_threshold: float = 25.0,
    previous_triplet_width: int = 3,
    prior_wave_instability: bool = False,
    consecutive_unstable_waves: int = 0,
    consecutive_clean_waves: int = 0,
) -> dict[str, object]:
    """
    ``mesh budget``: the concurrency authority from remaining budget (see `mesh.budget_policy`).

    .. versionadded:: 0.1.0
    """
    return budget_policy(
        remaining_five_hour=remaining_five_hour,
        remaining_weekly=remaining_weekly,
        max_threads=max_threads,
        linear_start_threshold=linear_start_threshold,
        single_agent_threshold=single_agent_threshold,
        scaleout_threshold=scaleout_threshold,
        previous_triplet_width=previous_triplet_width,
        prior_wave_instability=prior_wave_instability,
        consecutive_unstable_waves=consecutive_unstable_waves,
        consecutive_clean_waves=consecutive_clean_waves,
    ).to_document()


def replay(
    *,
    remaining_five_hour: float,
    remaining_weekly: float,
    ready_units: int,
    max_threads: int = _DEFAULT_MAX_THREADS,
    previous_triplet_width: int = 3,
    prior_wave_instability: bool = False,
    consecutive_unstable_waves: int = 0,
    consecutive_clean_waves: int = 0,
) -> dict[str, object]:
    """
    ``mesh replay``: preflight split of ready units into waves (see `mesh.replay`).

    .. versionadded:: 0.1.0
    """
    return _replay(
        remaining_five_hour=remaining_five_hour,
        remaining_weekly=remaining_weekly,
        ready_units=ready_units,
        max_threads=max_threads,
        previous_triplet_width=previous_triplet_width,
        prior_wave_instability=prior_wave_instability,
        consecutive_unstable_waves=consecutive_unstable_waves,
        consecutive_clean_waves=consecutive_clean_waves,
    ).to_document()


def plan_sync(*, input_json: StrPath) -> dict[str, object]:
    """
    ``mesh plan_sync``: count a plan file's steps by status.

    .. versionadded:: 0.1.0
    """
    return _plan_sync(_read_json(input_json, what="plan")).to_document()


def slice(  # noqa: A001 - named after the command it implements
    *, input_json: StrPath, max_slices: int | None = None, output_json: StrPath | None = None
) -> dict[str, object]:
    """
    ``mesh slice``: slice a plan file into units; optionally also write them to ``output_json``.

    The output file is written atomically (parent folders are created) and may
    not be the input file.

    .. versionadded:: 0.1.0
    """
    plan = _read_json(input_json, what="plan")
    document = slice_plan(plan, max_slices=max_slices).to_document()
    if output_json is not None:
        ensure_distinct(
            output_json, input_json, output_flag="--output-json", input_flags=("--input-json",)
        )
        atomic_write_text(
            output_json, dumps_json(document) + "\n", what="units JSON", create_parents=True
        )
    return document


def wave(
    *,
    units_json: StrPath,
    csv_path: StrPath,
    max_active: int = 1,
    lane: Lane | str = Lane.CODER,
    triplet_width: int = 3,
) -> dict[str, object]:
    """
    ``mesh wave``: write the next ready batch of candidate rows as CSV.

    .. versionadded:: 0.1.0
    """
    units = _read_json(units_json, what="units JSON")
    selected = select_wave(units, max_active=max_active, lane=lane, triplet_width=triplet_width)
    ensure_distinct(csv_path, units_json, output_flag="--csv-path", input_flags=("--units-json",))
    text = format_csv(BATCH_COLUMNS, (row.cells() for row in selected.rows))
    atomic_write_text(csv_path, text, what="batch CSV", create_parents=True)
    return selected.to_document(csv_path=str(csv_path))


def run_csv(
    *,
    csv_path: StrPath,
    output_csv_path: StrPath,
    max_concurrency: int | None = None,
    runnable_units: int | None = None,
    floor_threshold: int = 3,
    fail_on_floor: bool = False,
    deps_csv: StrPath | None = None,
) -> dict[str, object]:
    """
    ``mesh run_csv``: validate a batch CSV and write its output CSV of queued candidates.

    Nothing is written when anything is wrong: a bad CSV, a deps problem, the
    floor gate failing under ``fail_on_floor``, or an output path that is one of
    the inputs. The output is written atomically, its missing folders created.

    .. versionadded:: 0.1.0
    """
    inputs: list[StrPath] = [csv_path]
    flags = ["--csv-path"]
    if deps_csv is not None:
        inputs.append(deps_csv)
        flags.append("--deps-csv")
    ensure_distinct(
        output_csv_path, *inputs, output_flag="--output-csv-path", input_flags=tuple(flags)
    )
    prepared = prepare_batch(
        read_text(csv_path, what="batch CSV"),
        max_concurrency=max_concurrency,
        runnable_units=runnable_units,
        floor_threshold=floor_threshold,
        fail_on_floor=fail_on_floor,
        deps_csv_text=None if deps_csv is None else read_text(deps_csv, what="deps CSV"),
    )
    text = format_csv(OUTPUT_COLUMNS, (row.cells() for row in prepared.output_rows))
    atomic_write_text(output_csv_path, text, what="output CSV", create_parents=True)
    return prepared.to_document(csv_path=str(csv_path), output_csv_path=str(output_csv_path))


def ledger(
    *, input_json: StrPath | None = None, run: StrPath | None = None, runs: StrPath = "mesh-runs"
) -> dict[str, object] | str:
    """
    ``mesh ledger``: keep only the events that occurred; or, given a stored run, its prose ledger.

    ``--input-json PATH`` filters a ledger payload (a JSON document comes
    back); ``RUN`` (a run's folder, store, or id under ``runs``) renders that
    run's Orchestration Ledger (text comes back).

    .. versionadded:: 0.1.0
    """
    if (input_json is None) == (run is None):
        raise OptionError("MissingArgument", "give a RUN or --input-json PATH (one of them)")
    if run is not None:
        from .cli._run_command import stored_ledger  # noqa: PLC0415 - loads the engine

        return stored_ledger(run=run, runs=runs)
    assert input_json is not None  # noqa: S101 - one of the two, checked above
    return {"command": "ledger", "events": occurred_events(_read_json(input_json, what="ledger"))}
