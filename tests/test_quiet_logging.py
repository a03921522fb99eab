"""mesh and its dependencies write nothing to the host's logging unless asked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A whole run in a fresh interpreter, so that what mesh and its dependencies (anyio,
# attrs, cattrs, structlog, transitions, trio...) would log when imported is caught too:
# in the test process they were imported long before this test.
PROBE = """
import json, logging, sys

records = []


class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.name, record.levelname, record.getMessage()])


root = logging.getLogger()
root.addHandler(Keep(level=logging.DEBUG))
root.setLevel(logging.DEBUG)

import structlog

import mesh
import mesh.testing


def prover(request):
    verdict = "fail" if request.unit.id == "broken" else "pass"
    return mesh.testing.answer(request, decision=verdict, proof_status=verdict)


units = [
    mesh.Unit(id="fine", objective="works"),
    mesh.Unit(id="broken", objective="fails its proof"),
    mesh.Unit(id="after", objective="waits for broken", deps=("broken",)),
]
roles = mesh.testing.fake_roles(prover=mesh.testing.FakeAdapter(prover))
result = mesh.run(units, roles=roles, backend=sys.argv[1])
handlers = [
    [name, type(handler).__name__]
    for name, logger in logging.Logger.manager.loggerDict.items()
    if isinstance(logger, logging.Logger)
    for handler in logger.handlers
    if not isinstance(handler, logging.NullHandler)
]
print(json.dumps({
    "states": [outcome.state for outcome in result.outcomes],
    "records": records,
    "handlers": handlers,
    "root_handlers": [type(handler).__name__ for handler in root.handlers],
    "structlog_configured": structlog.is_configured(),
}))
"""


def _event_loop_line(record: list[str]) -> bool:
    """The standard library's event loop says which selector it picked when it is made."""
    return record[:2] == ["asyncio", "DEBUG"] and record[2].startswith("Using selector: ")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_whole_run_logs_nothing(backend: str) -> None:
    """A run that completes, fails and blocks units logs nothing and configures nothing."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, backend],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report = json.loads(done.stdout)
    assert report["states"] == ["completed", "failed", "blocked"]
    # asyncio's own line shows that the probe's handler hears DEBUG records from libraries.
    assert (backend == "asyncio") == any(map(_event_loop_line, report["records"]))
    assert [record for record in report["records"] if not _event_loop_line(record)] == []
    assert report["handlers"] == []
    assert report["root_handlers"] == ["Keep"]
    assert report["structlog_configured"] is False
    assert done.stderr == ""
