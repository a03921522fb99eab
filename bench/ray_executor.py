"""
The Ray executor against the local one, on the same plan in the same run.

Proofs are sync adapters doing pure-Python work (a GIL-bound proof): local
runs give them threads that take turns on the interpreter lock, Ray gives them
worker processes. The no-work row is the Ray overhead per remote call.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import attrs

import mesh

from ._report import table
from .engine import _answer, dag, noop_roles

_ROOT = Path(__file__).resolve().parents[1]


class BurningProver:
    """Spends ``seconds`` of CPU in Python, then passes: a GIL-bound proof."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, request: mesh.ProofRequest) -> dict[str, object]:
        """Burn, then answer ``pass``."""
        end = time.thread_time() + self.seconds
        while time.thread_time() < end:
            pass
        return _answer(
            request, "prover", "pass", proof_status="pass", proof_attempts=request.proof_attempt
        )


def wall_seconds(units: int, seconds: float, executor: mesh.Executor | None) -> float:
    """Wall time of a run of ``units`` no-op units whose proofs burn ``seconds`` each."""
    roles = attrs.evolve(noop_roles(), prover=BurningProver(seconds))
    started = time.perf_counter()
    result = mesh.run(
        dag(units, chain=1), roles=roles, executor=executor, max_threads=16, call_timeout=None
    )
    elapsed = time.perf_counter() - started
    assert result.metrics.completed == units, result.metrics
    return elapsed


def run(units: int, work: tuple[float, ...] = (0.0, 0.05, 0.2)) -> str:
    """The ray section of the report."""
    title = f"Ray executor vs local, {units} units x 3 proofs, {os.cpu_count()} CPUs"
    if importlib.util.find_spec("ray") is None:
        return table(title, ["note"], [["ray is not installed: pip install 'mesh[ray]'"]])
    import ray  # noqa: PLC0415 - optional

    joined = ray.is_initialized()
    if not joined:
        # Started once, outside the measurements; workers import this package from here.
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(_ROOT)}},
        )
    try:
        rows: list[list[Any]] = []
        proofs = units * 3
        for seconds in work:
            local = wall_seconds(units, seconds, None)
            remote = wall_seconds(units, seconds, mesh.RayExecutor(lanes=["prover"]))
            rows.append(
                [
                    f"{seconds * 1000:g} ms",
                    proofs,
                    local,
                    remote,
                    remote / local,
                    (remote - local) / proofs * 1000 if seconds == 0 else "",
                ]
            )
    finally:
        if not joined:
            ray.shutdown()
    return table(
        title,
        [
            "CPU per proof",
            "proofs",
            "local wall s",
            "ray wall s",
            "ray / local",
            "ray overhead ms/call",
        ],
        rows,
    )
