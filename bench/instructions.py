"""
Engine cost in machine instructions per unit: a figure that noise on a shared machine cannot move.

CPU time on a shared machine varies by ±20 % from run to run; the number of
instructions a run executes does not. Under valgrind's cachegrind (no cache
simulation), a run of ``count`` units of the engine DAG and a run of none are
counted, each after the same warm-up run; their difference over ``count`` is
what one unit costs. It is the figure to compare two versions of the engine
by (``python -m bench instructions`` on each). Needs ``valgrind`` on the PATH
(Debian: ``apt-get install valgrind``); about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ._report import table

# The run a counted process makes: a warm-up, then ``count`` units (none for the baseline).
_SCRIPT = """
import sys
from bench.engine import dag, noop_roles
import mesh
count, backend = int(sys.argv[1]), sys.argv[2]
roles = noop_roles()
mesh.run(dag(20), roles=roles, max_threads=64, call_timeout=None, backend=backend)
if count:
    result = mesh.run(dag(count), roles=roles, max_threads=64, call_timeout=None, backend=backend)
    assert result.metrics.completed == count
"""
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(count: int, backend: str) -> int | None:
    """Instructions one process running ``count`` units executes (None: valgrind is missing)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    command = [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-c",
        _SCRIPT,
        str(count),
        backend,
    ]
    # A fixed hash seed: set and dict orders, and so the instructions, repeat run to run.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    found = _REFS.search(done.stderr)
    if found is None:
        raise RuntimeError(f"cachegrind printed no instruction count:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_unit(count: int, backend: str) -> float | None:
    """Millions of instructions per unit, from a run of ``count`` units less a run of none."""
    baseline = instructions(0, backend)
    if baseline is None:
        return None
    counted = instructions(count, backend)
    assert counted is not None
    return (counted - baseline) / count / 1e6


def run(count: int) -> str:
    """The instructions section of the report."""
    rows: list[list[object]] = []
    for backend in ("asyncio", "trio"):
        millions = per_unit(count, backend)
        shown = "n/a (valgrind not installed)" if millions is None else millions
        rows.append([backend, count, shown])
    return table(
        "Engine instructions per unit (valgrind cachegrind; noise-free)",
        ["backend", "units", "million instructions per unit"],
        rows,
    )
