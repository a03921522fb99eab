"""
``python -m bench [--quick] [SECTION ...]``: run mesh's benchmarks and print the ratios.

Sections: engine, scheduling, workspaces, cli, ray (default: all; ray needs
``mesh[ray]``), and on request instructions (the engine's cost per unit in
machine instructions, noise-free; needs valgrind). ``--quick`` uses
small sizes, for a smoke run. Peers are measured when installed: Dask in the
bench's environment (``pip install dask``), Prefect there or in the
interpreter ``MESH_BENCH_PREFECT_PYTHON`` names (a separate environment keeps
Prefect's dependencies away from mesh's).
"""

from __future__ import annotations

import platform
import sys
import time

from . import cli, engine, instructions, ray_executor, scheduling, workspaces


def main(arguments: list[str]) -> int:
    """Run the chosen sections and print each table as soon as it is measured."""
    quick = "--quick" in arguments
    chosen = [a for a in arguments if not a.startswith("--")] or [
        "engine",
        "scheduling",
        "workspaces",
        "cli",
        "ray",
    ]
    sections = {
        "engine": lambda: engine.run((100, 1000) if quick else (100, 1000, 10000)),
        "scheduling": lambda: scheduling.run(2 if quick else 10, 40 if quick else 200),
        "workspaces": lambda: workspaces.run((100,) if quick else (100, 5000), 3 if quick else 20),
        "cli": lambda: cli.run(500 if quick else 10000),
        "ray": lambda: ray_executor.run(4 if quick else 40),
        "instructions": lambda: instructions.run(20 if quick else 200),
    }
    unknown = [name for name in chosen if name not in sections]
    if unknown:
        print(
            f"unknown section: {', '.join(unknown)} (known: {', '.join(sections)})", file=sys.stderr
        )
        return 2
    print(
        f"mesh benchmarks on {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}, {time.strftime('%Y-%m-%d')}\n"
    )
    for name in chosen:
        print(sections[name](), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
