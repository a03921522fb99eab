"""Adapters for the Ray tests: picklable, importable on Ray workers (tests/ is on their path)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mesh
from mesh.engine._roles import result_document
from mesh.host._process import run_command
from mesh.testing import answer


def worker_facts() -> dict[str, object]:
    """Where this call runs: the process and the Ray resources assigned to it."""
    import ray  # noqa: PLC0415 - only on workers, where Ray is

    context = ray.get_runtime_context()
    return {"pid": os.getpid(), "resources": context.get_assigned_resources()}  # type: ignore[no-untyped-call]


class RecordingProver:
    """A `CommandProver` whose evidence line says which Ray resources the call held."""

    def __init__(self, inner: mesh.CommandProver) -> None:
        self.inner = inner

    async def __call__(self, request: mesh.ProofRequest) -> dict[str, object]:
        answer = await self.inner(request)
        evidence = dict(answer["proof_evidence"])  # type: ignore[call-overload]
        evidence["key_line"] = f"resources={worker_facts()['resources']}"
        return {**answer, "proof_evidence": evidence}


class HangingFixer:
    """An async fixer whose call runs a long ``sleep SLEEP`` (found by that marker)."""

    def __init__(self, marker: str, sleep: str) -> None:
        self.marker = marker
        self.sleep = sleep

    async def __call__(self, request: mesh.AdjudicationRequest) -> dict[str, object]:
        path = Path(f"{self.marker}.{request.call}")
        try:
            # Contained commands may run in a pid namespace: the sleep is found by its
            # marker, never by a pid it would see ($$ means nothing outside).
            await run_command(f"touch {path}; exec sleep {self.sleep}", cwd="/", timeout=300)
        finally:
            # Written without awaiting: the call is being cancelled.
            Path(f"{path}.unwound").write_text("yes")
        raise AssertionError("the sleep was cancelled")  # pragma: no cover


class SleepingFixer:
    """A sync fixer that blocks in ``time.sleep`` (interrupted by Ray's cancel)."""

    def __call__(self, request: mesh.AdjudicationRequest) -> dict[str, object]:
        time.sleep(120)
        raise AssertionError("the sleep was interrupted")  # pragma: no cover


class FailingCoder:
    """A coder that raises, to compare the evidence with a local run's."""

    def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
        raise RuntimeError(f"no model for {request.unit.id}")


class PidCoder:
    """Answers ``no_diff`` with the worker's pid in the notes (a sync adapter)."""

    def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
        return result_document(
            request.unit,
            candidate_id=request.candidate_id,
            lane=request.lane,
            decision=mesh.Decision.NO_DIFF,
            triplet_index=request.triplet_index,
            notes=f"pid={os.getpid()}",
        )


def marker_paths(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}.*"))


class StubbornFixer:
    """A sync fixer that ignores Ray's interrupt: only killing its worker stops it."""

    def __call__(self, request: mesh.AdjudicationRequest) -> dict[str, object]:
        while True:
            try:
                time.sleep(120)
            except KeyboardInterrupt:
                continue


class CrashingCoder:
    """A coder whose worker process dies under it."""

    def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
        os._exit(3)


class TracedCoder:
    """Opens a span of its own, as an LLM client would; its notes name that span's parent."""

    def __call__(self, request: mesh.AuthorRequest) -> dict[str, object]:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - on the worker

        tracer = TracerProvider(shutdown_on_exit=False).get_tracer("an-llm-client")
        with tracer.start_as_current_span("llm") as span:
            parent = span.parent  # type: ignore[attr-defined]
        notes = "no parent" if parent is None else f"{parent.trace_id:032x}/{parent.span_id:016x}"
        return answer(request, notes=notes)
