"""
The streaming-batch CSV contract, for running candidates through a CSV substrate.

mesh's engine (`mesh.run`) needs none of this. It serves the other way to run
a wave: one CSV row per candidate, handed to a spreadsheet-like runner such as
``spawn_agents_on_csv``. `mesh.select_wave` picks the rows, `format_csv`
writes them, and `prepare_batch` checks a batch CSV against its contract
(columns, lanes, an optional deps CSV) and the concurrency floor gate, and
builds the output rows. The ``wave`` and ``run_csv`` commands are thin layers
over these.

    >>> import mesh, mesh.batch
    >>> wave = mesh.select_wave([mesh.Unit(id="u1", objective="Add greet()")], triplet_width=2)
    >>> text = mesh.batch.format_csv(mesh.batch.BATCH_COLUMNS, (row.cells() for row in wave.rows))
    >>> prepared = mesh.batch.prepare_batch(text, max_concurrency=4)
    >>> [row.candidate_id for row in prepared.output_rows], prepared.floor_result
    (['u1-coder-1', 'u1-coder-2'], <FloorResult.NOT_APPLICABLE: 'not_applicable'>)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from . import _rehome
from .contracts._enums import FloorResult
from .contracts._errors import CsvContractError, FloorGateFailed
from .contracts._records import (
    BATCH_COLUMNS,
    OUTPUT_COLUMNS,
    REQUIRED_BATCH_COLUMNS,
    BatchRow,
    DepsRow,
    OutputRow,
    PreparedBatch,
)
from .planning._batch import (
    floor_gate,
    format_csv,
    parse_batch_csv,
    parse_deps_csv,
    prepare_batch,
    validate_deps,
)

__all__ = [
    "BATCH_COLUMNS",
    "OUTPUT_COLUMNS",
    "REQUIRED_BATCH_COLUMNS",
    "BatchRow",
    "CsvContractError",
    "DepsRow",
    "FloorGateFailed",
    "FloorResult",
    "OutputRow",
    "PreparedBatch",
    "floor_gate",
    "format_csv",
    "parse_batch_csv",
    "parse_deps_csv",
    "prepare_batch",
    "validate_deps",
]

# Reprs, tracebacks, pickles and docs say `mesh.batch.BatchRow`, as `mesh` does for its own.
for _name in __all__:
    _rehome(globals()[_name], __name__)
del _name
