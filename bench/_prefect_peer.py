"""
Prefect as a peer: the engine benchmark's DAG of no-op tasks as a Prefect flow.

Run as a script by the interpreter that has Prefect (``MESH_BENCH_PREFECT_PYTHON``
or the bench's own); prints the CPU seconds of the whole run, its temporary
API server included (it is a child process, counted once it exits).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from typing import Any

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("DO_NOT_TRACK", "1")  # no telemetry: the machine may be offline

from prefect import flow, task


@task
def noop(*_: object) -> None:
    return None


@flow
def chains(count: int, chain: int = 10) -> None:
    futures: list[Any] = []
    for index in range(count):
        deps = [futures[index - 1]] if index % chain else []
        futures.append(noop.submit(*deps))
    for future in futures:
        future.result()


def main() -> None:
    logging.disable(logging.CRITICAL)
    chains(int(sys.argv[1]))
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(sum(u.ru_utime + u.ru_stime for u in usage))


if __name__ == "__main__":
    main()
