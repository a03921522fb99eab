"""The command line on big inputs: wall time and peak memory of slice, wave and run_csv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._report import table


def measure(arguments: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one ``mesh`` command, in its own process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh", *arguments],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    with process.stderr:
        errors = process.stderr.read()
    assert process.returncode == 0, errors
    return wall, usage.ru_maxrss / 1024


def run(steps: int) -> str:
    """The command-line section of the report (the wave has three rows per step)."""
    rows = steps * 3
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        folder = Path(scratch)
        # Independent steps: the wave takes every unit, three candidate rows each.
        plan = {
            "plan": [
                {
                    "id": f"s{i}",
                    "step": f"step {i}",
                    "status": "pending",
                    "write_scope": [f"src/m{i}"],
                    "risk_tier": "med",
                }
                for i in range(steps)
            ]
        }
        (folder / "plan.json").write_text(json.dumps(plan))
        commands = [
            ("version (startup)", ["--version"]),
            (
                f"slice {steps} steps",
                ["slice", "--input-json", "plan.json", "--output-json", "units.json"],
            ),
            (
                f"wave {steps} units",
                [
                    "wave",
                    "--units-json",
                    "units.json",
                    "--csv-path",
                    "wave.csv",
                    "--max-active",
                    str(steps),
                ],
            ),
            (
                f"run_csv {rows} rows",
                [
                    "run_csv",
                    "--csv-path",
                    "wave.csv",
                    "--output-csv-path",
                    "out.csv",
                    "--max-concurrency",
                    "12",
                ],
            ),
        ]
        measured = [(name, *measure(arguments, folder)) for name, arguments in commands]
    startup = measured[0][1]
    return table(
        "Command line: one process per command",
        ["command", "wall s", "peak MiB", "wall / startup"],
        [[name, wall, peak, wall / startup] for name, wall, peak in measured],
    )
