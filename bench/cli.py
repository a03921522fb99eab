"""
The command line: start-up of each command, then wall time and peak memory on big inputs.

Start-up is measured against the interpreter's own (``python -c pass``) in
the same run, rounds interleaved so that a busy moment of the machine weighs
on every command alike; the targets are 0.1 s for ``mesh --help`` and 0.15 s
for a helper command on a small input.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from ._report import table

HELP_TARGET: Final = 0.1
COMMAND_TARGET: Final = 0.15

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


def mesh_command() -> tuple[list[str], str]:
    """How to start ``mesh``: the console script beside the interpreter, else ``-m mesh``."""
    script = Path(sys.executable).with_name("mesh")
    if script.exists():
        return [str(script)], "the mesh console script"
    return [sys.executable, "-m", "mesh"], "python -m mesh"


def _plan(steps: int) -> dict[str, object]:
    """Independent steps: a wave takes every unit, three candidate rows each."""
    return {
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


def _median_walls(commands: list[list[str]], cwd: Path, rounds: int) -> list[float]:
    """The median wall seconds of each command, run once per round, in turn."""
    walls: list[list[float]] = [[] for _ in commands]
    for _ in range(rounds):
        for argv, measured in zip(commands, walls, strict=True):
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
            measured.append(time.perf_counter() - started)
            assert done.returncode == 0, done.stderr
    return [statistics.median(measured) for measured in walls]


def startup(rounds: int = 11) -> str:
    """The start-up section: each command on a small input beside ``python -c pass``."""
    mesh, spelt = mesh_command()
    python = sys.executable
    budget = ["--remaining-five-hour", "40", "--remaining-weekly", "28"]
    rows: list[tuple[str, list[str], float | None]] = [
        ("python -c pass", [python, "-c", "pass"], None),
        ("python -c 'import mesh'", [python, "-c", "import mesh"], None),
        ("mesh --help", [*mesh, "--help"], HELP_TARGET),
        ("mesh budget", [*mesh, "budget", *budget], COMMAND_TARGET),
        ("mesh replay", [*mesh, "replay", *budget, "--ready-units", "5"], COMMAND_TARGET),
        ("mesh plan_sync", [*mesh, "plan_sync", "--input-json", "plan.json"], COMMAND_TARGET),
        (
            "mesh slice",
            [*mesh, "slice", "--input-json", "plan.json", "--output-json", "units.json"],
            COMMAND_TARGET,
        ),
        (
            "mesh wave",
            [*mesh, "wave", "--units-json", "units.json", "--csv-path", "batch.csv"],
            COMMAND_TARGET,
        ),
        (
            "mesh run_csv",
            [*mesh, "run_csv", "--csv-path", "batch.csv", "--output-csv-path", "out.csv"],
            COMMAND_TARGET,
        ),
        ("mesh ledger", [*mesh, "ledger", "--input-json", "ledger.json"], COMMAND_TARGET),
    ]
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        folder = Path(scratch)
        (folder / "plan.json").write_text(json.dumps(_plan(3)))
        (folder / "ledger.json").write_text(json.dumps({"waves": 2, "retries": 0}))
        # One untimed pass first: slice, wave and run_csv leave the next one its input.
        _median_walls([argv for _, argv, _ in rows], folder, 1)
        walls = _median_walls([argv for _, argv, _ in rows], folder, rounds)
    baseline = walls[0]
    return table(
        f"Command line start-up: median of {rounds} runs ({spelt}), small inputs",
        ["command", "wall s", "/ python -c pass", "target s", "within target"],
        [
            [
                name,
                wall,
                wall / baseline,
                "" if target is None else target,
                "" if target is None else ("yes" if wall <= target else "NO"),
            ]
            for (name, _, target), wall in zip(rows, walls, strict=True)
        ],
    )


def big_inputs(steps: int) -> str:
    """Slice, wave and run_csv on a big plan (the wave has three rows per step)."""
    rows = steps * 3
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        folder = Path(scratch)
        (folder / "plan.json").write_text(json.dumps(_plan(steps)))
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
    startup_wall = measured[0][1]
    return table(
        "Command line on big inputs: one process per command (python -m mesh)",
        ["command", "wall s", "peak MiB", "wall / startup"],
        [[name, wall, peak, wall / startup_wall] for name, wall, peak in measured],
    )


def run(steps: int, startup_rounds: int = 11) -> str:
    """The command-line section of the report: start-up, then big inputs."""
    return startup(startup_rounds) + "\n" + big_inputs(steps)
