"""OpenTelemetry tracing of real runs on asyncio and trio, exported to the SDK's memory exporter."""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, StatusCode

import mesh
from mesh.engine._tracing import (
    attached_carrier,
    context_with_trace,
    trace_carrier,
    tracing_for,
)
from mesh.testing import FakeAdapter, Hang, ManualClock, Raise, answer, fake_roles

from engine_helpers import execute, unit

pytestmark = pytest.mark.anyio

STAGES = ["mesh.generation", "mesh.proof", "mesh.adjudication", "mesh.delivery"]


class Traced:
    """A private tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def children(self, parent: ReadableSpan, name: str | None = None) -> list[ReadableSpan]:
        return [
            span
            for span in self.spans
            if span.parent is not None
            and parent.context is not None
            and span.parent.span_id == parent.context.span_id
            and (name is None or span.name == name)
        ]

    def parent(self, child: ReadableSpan) -> ReadableSpan:
        assert child.parent is not None
        (found,) = [
            s
            for s in self.spans
            if s.context is not None and s.context.span_id == child.parent.span_id
        ]
        return found


@pytest.fixture(name="traced")
def _traced() -> Traced:
    return Traced()


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def lanes(spans: Sequence[ReadableSpan]) -> list[str]:
    return sorted(str(attrs_of(s)["mesh.lane"]) for s in spans)


def fail_proof(request: mesh.ProofRequest) -> dict[str, object]:
    return answer(request, decision="fail", proof_status="fail")


class TestSpanTree:
    async def test_run_unit_stage_call(self, traced: Traced) -> None:
        """One run span; a unit span per unit under it; stages under units; calls under stages."""
        result = await execute(
            [unit("a"), unit("b", "a")],
            fake_roles(),
            tracer_provider=traced.provider,
            run_id="run-1",
        )
        result.check()
        run = traced.one("mesh.run")
        assert run.parent is None
        assert run.status.status_code is StatusCode.UNSET
        assert attrs_of(run) == {
            "mesh.run_id": "run-1",
            "mesh.resumed": False,
            "mesh.units": 2,
            "mesh.completed": 2,
            "mesh.failed": 0,
            "mesh.blocked": 0,
        }
        units = traced.children(run, "mesh.unit")
        assert sorted(attrs_of(u)["mesh.unit_id"] for u in units) == ["a", "b"]
        assert {len({s.context.trace_id for s in traced.spans if s.context})} == {1}
        for unit_span in units:
            unit_id = attrs_of(unit_span)["mesh.unit_id"]
            assert {
                "mesh.run_id": "run-1",
                "mesh.unit_id": unit_id,
                "mesh.unit_state": "completed",
                "mesh.attempts": 1,
                "mesh.accepted_candidate": f"{unit_id}-coder-1",
            } == attrs_of(unit_span)
            stages = traced.children(unit_span)
            # The lease is given back by the unit itself, once its attempts are over.
            assert sorted([*STAGES, "mesh.call"]) == sorted(s.name for s in stages)
            (release,) = [s for s in stages if s.name == "mesh.call"]
            assert attrs_of(release)["mesh.action"] == "release"
            by_name = {s.name: s for s in stages}
            generation = by_name["mesh.generation"]
            assert attrs_of(generation)["mesh.candidates"] == 3
            assert lanes(traced.children(generation)) == ["coder", "coder", "reducer"]
            proof = by_name["mesh.proof"]
            lease = traced.children(proof, "mesh.lease")[0]
            assert lanes(traced.children(lease)) == ["locksmith"]
            assert str(attrs_of(lease)["mesh.lease_id"]).startswith("lease-")
            assert lanes(traced.children(proof, "mesh.call")) == ["applier"] * 3 + ["prover"] * 3
            assert attrs_of(proof)["mesh.call_failures"] == 0
            adjudication = by_name["mesh.adjudication"]
            assert lanes(traced.children(adjudication)) == ["fixer", "fixer"]
            assert f"{unit_id}-coder-1" == attrs_of(adjudication)["mesh.accepted_candidate"]
            delivery = by_name["mesh.delivery"]
            (integrator,) = traced.children(delivery)
            assert attrs_of(delivery)["mesh.decision"] == "integrated_patch"
            assert {
                "mesh.unit_id": unit_id,
                "mesh.candidate_id": f"{unit_id}-coder-1",
                "mesh.lane": "integrator",
                "mesh.attempt": 1,
                "mesh.call": 1,
                "mesh.outcome": "ok",
                "mesh.decision": "integrated_patch",
            } == attrs_of(integrator)

    async def test_a_failing_unit_is_an_error(self, traced: Traced) -> None:
        """A unit that fails is an error span with its code; its dependant is counted blocked."""
        roles = fake_roles(prover=FakeAdapter(fail_proof))
        await execute([unit("a"), unit("b", "a")], roles, tracer_provider=traced.provider)
        run = traced.one("mesh.run")
        assert StatusCode.ERROR is run.status.status_code
        assert run.status.description == "2 units did not complete"
        assert (attrs_of(run)["mesh.failed"], attrs_of(run)["mesh.blocked"]) == (1, 1)
        unit_span = traced.one("mesh.unit")
        assert StatusCode.ERROR is unit_span.status.status_code
        assert attrs_of(unit_span)["mesh.failure_code"] == "proof_missing"
        assert (
            attrs_of(unit_span)["mesh.unit_state"],
            attrs_of(unit_span)["mesh.attempts"],
        ) == ("failed", 2)
        assert sorted(attrs_of(s)["mesh.attempt"] for s in traced.named("mesh.proof")) == [1, 2]

    async def test_a_timed_out_call_is_an_error_and_its_retry_is_the_next_call(
        self, traced: Traced
    ) -> None:
        clock = ManualClock()
        coder = FakeAdapter(script=[Hang()])
        async with clock.autojumping():
            await execute(
                [unit("a")],
                fake_roles(coder=coder),
                clock=clock,
                call_timeout=30,
                tracer_provider=traced.provider,
            )
        timeout = next(
            s for s in traced.named("mesh.call") if attrs_of(s)["mesh.outcome"] == "timeout"
        )
        assert StatusCode.ERROR is timeout.status.status_code
        assert attrs_of(timeout)["error.type"] == "timeout"
        generation = traced.parent(timeout)
        retried = [
            s
            for s in traced.children(generation)
            if attrs_of(s)["mesh.candidate_id"] == attrs_of(timeout)["mesh.candidate_id"]
        ]
        assert sorted((attrs_of(s)["mesh.call"], attrs_of(s)["mesh.outcome"]) for s in retried) == [
            (1, "timeout"),
            (2, "ok"),
        ]

    @pytest.mark.mesh_strict(strict=False)
    async def test_errors_and_invalid_answers_are_errors(self, traced: Traced) -> None:
        """An adapter that raises and one that answers invalidly: error spans saying which."""
        coder = FakeAdapter(script=[Raise(RuntimeError("no model")), {"bogus": True}])
        await execute([unit("a")], fake_roles(coder=coder), tracer_provider=traced.provider)
        generation = traced.named("mesh.generation")[0]
        assert StatusCode.ERROR is generation.status.status_code
        failed = {
            attrs_of(s)["mesh.outcome"]: s
            for s in traced.children(generation)
            if attrs_of(s)["mesh.lane"] == "coder"
        }
        assert {"error", "invalid_output_schema"} == set(failed)
        assert attrs_of(failed["error"])["error.type"] == "RuntimeError"
        assert failed["error"].status.description == "RuntimeError: no model"
        invalid = failed["invalid_output_schema"]
        assert attrs_of(invalid)["error.type"] == "invalid_output_schema"
        assert invalid.status.description
        assert "$." in invalid.status.description

    async def test_a_cancelled_run_ends_every_span(self, traced: Traced) -> None:
        """Cancelled while a call hangs: the spans end, saying they were cancelled."""
        started = anyio.Event()

        async def coder(request: mesh.AuthorRequest) -> object:
            started.set()
            await anyio.sleep_forever()
            raise AssertionError  # the run is cancelled first

        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: execute(
                    [unit("a")],
                    fake_roles(coder=coder),
                    call_timeout=None,
                    tracer_provider=traced.provider,
                )
            )
            await started.wait()
            group.cancel_scope.cancel()
        for name in ("mesh.run", "mesh.unit", "mesh.generation"):
            assert attrs_of(traced.one(name))["mesh.cancelled"] is True
        calls = traced.children(traced.one("mesh.generation"), "mesh.call")
        assert {"cancelled", "ok"} >= {attrs_of(c)["mesh.outcome"] for c in calls}
        assert "cancelled" in {attrs_of(c)["mesh.outcome"] for c in calls}

    async def test_an_exception_out_of_the_run_is_recorded(self, traced: Traced) -> None:
        """A strict run's adapter mistake ends the run span as an error, with the exception."""
        coder = FakeAdapter(script=[Raise(RuntimeError("no model"))])
        with pytest.raises(mesh.AdapterMistake):
            await execute(
                [unit("a")], fake_roles(coder=coder), tracer_provider=traced.provider, strict=True
            )
        run = traced.one("mesh.run")
        assert StatusCode.ERROR is run.status.status_code
        assert [event.name for event in run.events] == ["exception"]


class TestInsideAdapters:
    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_the_adapters_own_span_is_a_child_of_its_call(
        self, traced: Traced, kind: str
    ) -> None:
        """A sync adapter (in a worker thread) and an async one see their call as current."""
        tracer = traced.provider.get_tracer("an-llm-client")
        loop_thread = threading.get_ident()
        threads: list[int] = []

        def sync_coder(request: mesh.AuthorRequest) -> object:
            threads.append(threading.get_ident())
            with tracer.start_as_current_span("llm"):
                return answer(request)

        async def async_coder(request: mesh.AuthorRequest) -> object:
            with tracer.start_as_current_span("llm"):
                await anyio.lowlevel.checkpoint()
                return answer(request)

        coder = sync_coder if kind == "sync" else async_coder
        await execute([unit("a")], fake_roles(coder=coder), tracer_provider=traced.provider)
        own = traced.named("llm")
        assert len(own) == 2
        for span in own:
            call = traced.parent(span)
            assert call.name == "mesh.call"
            assert attrs_of(call)["mesh.lane"] == "coder"
            assert call.context is not None
            assert span.context is not None
            assert call.context.trace_id == span.context.trace_id
        if kind == "sync":
            assert threads
            assert loop_thread not in threads

    async def test_noted_tokens_and_cost_add_up(self, traced: Traced) -> None:
        """`note_call` facts are call attributes; tokens and cost add up per unit and per run."""

        def coder(request: mesh.AuthorRequest) -> object:
            mesh.note_call(
                input_tokens=100, output_tokens=20, cost_usd=0.5, agent="fake", turns=None
            )
            return answer(request)

        await execute(
            [unit("a"), unit("b")], fake_roles(coder=coder), tracer_provider=traced.provider
        )
        coder_calls = [s for s in traced.named("mesh.call") if attrs_of(s)["mesh.lane"] == "coder"]
        assert len(coder_calls) == 4
        for call in coder_calls:
            facts = attrs_of(call)
            assert (
                facts["gen_ai.usage.input_tokens"],
                facts["gen_ai.usage.output_tokens"],
            ) == (100, 20)
            assert (
                facts["mesh.facts.input_tokens"],
                facts["mesh.facts.cost_usd"],
                facts["mesh.facts.agent"],
            ) == (100, 0.5, "fake")
            assert "mesh.facts.turns" not in facts
        for unit_span in traced.named("mesh.unit"):
            assert tuple(
                attrs_of(unit_span)[f"mesh.{name}"]
                for name in ("input_tokens", "output_tokens", "cost_usd")
            ) == (200, 40, 1.0)
        run = attrs_of(traced.one("mesh.run"))
        assert (
            run["mesh.input_tokens"],
            run["mesh.output_tokens"],
            run["mesh.cost_usd"],
        ) == (400, 80, 2.0)


class TestSwitchingItOn:
    async def test_untraced_without_a_provider(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No provider set anywhere: no tracing at all; the adapter sees no current span."""
        monkeypatch.setattr(trace, "get_tracer_provider", ProxyTracerProvider)
        seen: list[bool] = []

        async def coder(request: mesh.AuthorRequest) -> object:
            seen.append(trace.get_current_span().get_span_context().is_valid)
            assert trace_carrier() is None
            return answer(request)

        async with mesh.Orchestrator(roles=fake_roles(coder=coder)) as orchestrator:
            assert orchestrator._tracing is None
            assert "execute" not in vars(orchestrator)
            (await orchestrator.execute([unit("a")])).check()
        assert seen == [False, False]

    def test_opentelemetry_is_not_imported_for_an_untraced_run(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A host that never imported OpenTelemetry set no provider: nothing is imported."""
        monkeypatch.delitem(sys.modules, "opentelemetry.trace")
        assert tracing_for(None) is None
        assert "opentelemetry.trace" not in sys.modules

    async def test_the_global_provider(
        self, traced: Traced, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A provider the host set globally traces runs given none."""
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: traced.provider)
        await execute([unit("a")], fake_roles())
        assert len(traced.named("mesh.run")) == 1

    async def test_a_no_op_provider_turns_it_off(
        self, traced: Traced, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: traced.provider)
        orchestrator = mesh.Orchestrator(roles=fake_roles(), tracer_provider=NoOpTracerProvider())
        assert orchestrator._tracing is None

    def test_not_a_provider(self) -> None:
        with pytest.raises(mesh.InputError, match="must be an OpenTelemetry TracerProvider"):
            mesh.Orchestrator(roles=fake_roles(), tracer_provider=object())  # type: ignore[arg-type]

    def test_a_provider_without_opentelemetry_installed(
        self, traced: Traced, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
        with pytest.raises(mesh.InputError, match=r"pip install 'mesh\[otel\]'"):
            tracing_for(traced.provider)

    async def test_through_the_front_door(self, traced: Traced) -> None:
        result = await mesh.run_async(
            [unit("a")], roles=fake_roles(), tracer_provider=traced.provider
        )
        assert result.run_id == attrs_of(traced.one("mesh.run"))["mesh.run_id"]

    def test_the_front_door_checks_it(self, tmp_path: Path) -> None:
        """`run` and `resume` take it (a resume is given it again: the store cannot keep it)."""
        with pytest.raises(mesh.ValidationError, match="expected an OpenTelemetry TracerProvider"):
            mesh.run([unit("a")], roles=fake_roles(), tracer_provider=3)  # type: ignore[call-overload]
        with pytest.raises(
            mesh.ValidationError, match="tracer_provider: expected an OpenTelemetry"
        ):
            mesh.resume(tmp_path, roles=fake_roles(), tracer_provider=3)  # type: ignore[arg-type]

    def test_a_repository_run_is_traced_and_stores_no_provider(
        self, traced: Traced, repo: Path, tmp_path: Path
    ) -> None:
        """Mesh's own git roles run under their call spans; the store keeps no provider."""
        plan = {
            "plan": [
                {
                    "id": "a",
                    "step": "write a",
                    "status": "pending",
                    "write_scope": ["src/a.txt"],
                    "proof_command": "test -s src/a.txt",
                }
            ]
        }
        coder = mesh.ScriptedCoder(repo, {"unit-001": {"src/a.txt": "A\n"}})
        finished = mesh.run(
            plan,
            roles=mesh.Roles(coder=coder),
            repo=repo,
            out=tmp_path / "out",
            tracer_provider=traced.provider,
        )
        finished.result.check()
        assert attrs_of(traced.one("mesh.unit"))["mesh.unit_state"] == "completed"
        with mesh.RunStore.open(finished.store_path) as store:
            assert "tracer_provider" not in store.config


class TestCarrier:
    def test_a_carrier_attaches_the_calls_context(self, traced: Traced) -> None:
        """What a Ray worker does with the carrier: the call's span is the current one."""
        with traced.provider.get_tracer("test").start_as_current_span("call") as span:
            carrier: dict[str, str] = {}
            from opentelemetry import propagate  # noqa: PLC0415 - as the engine imports it

            propagate.inject(carrier)
        with attached_carrier(carrier):
            current = trace.get_current_span().get_span_context()
        assert span.get_span_context().span_id == current.span_id
        assert not trace.get_current_span().get_span_context().is_valid
        with attached_carrier(None):
            assert not trace.get_current_span().get_span_context().is_valid

    def test_a_call_span_outside_a_run(self, traced: Traced) -> None:
        """The gateway's hooks alone: the call's carrier names its span; facts add to nothing."""
        tracing = tracing_for(traced.provider)
        assert tracing is not None
        event: dict[str, object] = {"unit_id": "a", "lane": mesh.Lane.CODER, "outcome": None}
        call = tracing.start_call(event)
        carrier = trace_carrier()
        assert carrier is not None
        assert f"{call.span.get_span_context().span_id:016x}" in carrier["traceparent"]
        event.update(outcome="ok", facts={"input_tokens": 5})
        call.end()
        assert trace_carrier() is None
        assert attrs_of(traced.one("mesh.call"))["gen_ai.usage.input_tokens"] == 5

    def test_a_context_with_only_the_trace(
        self, traced: Traced, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """For another loop: the current span goes along, nothing else of the caller's context."""
        other = contextvars.ContextVar("other", default="unset")
        other.set("the caller's")
        with traced.provider.get_tracer("test").start_as_current_span("call") as span:
            fresh = context_with_trace()
        assert span is fresh.run(trace.get_current_span)
        assert fresh.run(other.get) == "unset"
        monkeypatch.delitem(sys.modules, "opentelemetry.context")
        assert list(context_with_trace()) == []

    def test_no_opentelemetry_on_the_worker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A worker without OpenTelemetry runs the call without its context."""
        monkeypatch.setitem(sys.modules, "opentelemetry.propagate", None)
        with attached_carrier({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}):
            assert not trace.get_current_span().get_span_context().is_valid
