"""The command line on big inputs: wall time and peak memory of slice, wave and run_csv."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ._report import table

# Measured from a small wrapper process: a child forked from this (large) process would
# report this process's memory as its own peak.
_WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run([sys.executable, "-m", "mesh", *sys.argv[1:]], capture_output=True, text=True)
wall = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(done.returncode, wall, peak, repr(done.stderr))
"""


def measure(arguments: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one ``mesh`` command, in its own process."""
    report = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(" ", 3)
    assert report[0] == "0", report[3]
    return float(report[1]), int(report[2]) / 1024


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
                    "unit_scope": f"module {i}",
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
        written = (folder / "out.csv").read_text().count("\n") - 1
        assert written == rows, f"run_csv wrote {written} rows, expected {rows}"
    startup = measured[0][1]
    return table(
        "Command line: one process per command",
        ["command", "wall s", "peak MiB", "wall / startup"],
        [[name, wall, peak, wall / startup] for name, wall, peak in measured],
    )
