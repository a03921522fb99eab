"""OpenTelemetry tracing of real runs on asyncio and trio, exported to the SDK's memory exporter."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
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
        coder = FakeAdapter(script=[Raise(RuntimeError("no model " * 10_000))])
        with pytest.raises(mesh.AdapterMistake):
            await execute(
                [unit("a")], fake_roles(coder=coder), tracer_provider=traced.provider, strict=True
            )
        run = traced.one("mesh.run")
        assert StatusCode.ERROR is run.status.status_code
        assert [event.name for event in run.events] == ["exception"]
        # Bounded, however long the adapter's message.
        exception = dict(run.events[0].attributes or {})
        assert len(str(exception["exception.message"])) <= 500
        assert len(str(exception["exception.stacktrace"])) <= 4000
        assert len(run.status.description or "") <= 500


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
        assert call is not None
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


class Boom(SpanProcessor):
    """A host's span processor that raises when one kind of span starts or ends."""

    def __init__(self, where: str, name: str) -> None:
        self.where, self.name = where, name
        self.started = self.ended = 0
        self.started_at_error: int | None = None

    def _raise(self, where: str, span: ReadableSpan) -> None:
        if self.where == where and span.name == self.name:
            if self.started_at_error is None:
                self.started_at_error = self.started
            raise RuntimeError(f"on_{where} boom")

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started += 1
        self._raise("start", span)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1
        self._raise("end", span)


class FailingTracer:
    def start_span(self, *args: object, **kwargs: object) -> Span:
        raise RuntimeError("start_span boom")


class FailingProvider:
    def __init__(self, *, get_tracer: bool) -> None:
        self.fails_to_get = get_tracer

    def get_tracer(self, *args: object, **kwargs: object) -> FailingTracer:
        if self.fails_to_get:
            raise RuntimeError("get_tracer boom")
        return FailingTracer()


def boom() -> None:
    raise RuntimeError("boom")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "mesh.tracing"]


PLAN = [unit("a"), unit("b", "a"), unit("c")]


async def run_of(**options: Any) -> tuple[mesh.RunResult, list[mesh.LedgerEvent]]:
    events: list[mesh.LedgerEvent] = []
    result = await execute(
        PLAN, fake_roles(), run_id="r", sinks=[mesh.MemorySink(events)], **options
    )
    return result, events


def assert_same(result: mesh.RunResult, untraced: mesh.RunResult) -> None:
    assert result.outcomes == untraced.outcomes
    assert result.plan_state == untraced.plan_state
    assert attrs.evolve(result.metrics, elapsed_seconds=0, units_per_hour=0) == attrs.evolve(
        untraced.metrics, elapsed_seconds=0, units_per_hour=0
    )


class TestTracingNeverFailsTheRun:
    @pytest.mark.parametrize("where", ["start", "end"])
    @pytest.mark.parametrize("name", ["mesh.call", "mesh.unit", "mesh.proof", "mesh.run"])
    async def test_a_span_processor_that_raises(
        self, caplog: pytest.LogCaptureFixture, where: str, name: str
    ) -> None:
        """The run ends as an untraced one; the error is logged once and tracing stops."""
        untraced, _ = await run_of()
        traced = Traced()
        processor = Boom(where, name)
        traced.provider.add_span_processor(processor)
        result, events = await run_of(tracer_provider=traced.provider)
        assert_same(result, untraced)
        assert events[-1].event == "run_finished"
        (warning,) = warnings_of(caplog)
        assert warning.levelno == logging.WARNING
        assert warning.exc_info is not None
        assert str(warning.exc_info[1]) == f"on_{where} boom"
        # Tracing stopped at the error: no span started after it.
        assert processor.started == processor.started_at_error
        # What was started was ended (but the span whose start failed: the SDK keeps it).
        assert processor.ended == processor.started - (where == "start")
        assert not trace.get_current_span().get_span_context().is_valid

    async def test_the_next_run_is_traced_again(self, caplog: pytest.LogCaptureFixture) -> None:
        traced = Traced()
        processor = Boom("end", "mesh.run")
        traced.provider.add_span_processor(processor)
        async with mesh.Orchestrator(roles=fake_roles(), tracer_provider=traced.provider) as o:
            await o.execute([unit("a")])
            assert o._tracing is not None
            off = [o._tracing.off]
            processor.where = "nowhere"
            await o.execute([unit("b")])
            off.append(o._tracing.off)
        assert off == [True, False]
        assert len(traced.named("mesh.run")) == 2
        assert len(warnings_of(caplog)) == 1

    async def test_a_tracer_that_cannot_start_spans(self, caplog: pytest.LogCaptureFixture) -> None:
        untraced, _ = await run_of()
        result, events = await run_of(tracer_provider=FailingProvider(get_tracer=False))
        assert_same(result, untraced)
        assert events[-1].event == "run_finished"
        assert len(warnings_of(caplog)) == 1

    async def test_a_provider_that_cannot_give_a_tracer(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        untraced, _ = await run_of()
        async with mesh.Orchestrator(
            roles=fake_roles(), tracer_provider=FailingProvider(get_tracer=True)
        ) as orchestrator:
            assert orchestrator._tracing is None
        result, _ = await run_of(tracer_provider=FailingProvider(get_tracer=True))
        assert_same(result, untraced)
        assert len(warnings_of(caplog)) == 2  # one per orchestrator

    async def test_a_context_that_cannot_be_attached(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The run's own span fails to become current: no more spans, the run goes on."""
        from opentelemetry import context  # noqa: PLC0415 - as the engine imports it

        untraced, _ = await run_of()
        traced = Traced()
        monkeypatch.setattr(context, "attach", lambda *_: boom())
        result, _ = await run_of(tracer_provider=traced.provider)
        assert_same(result, untraced)
        assert [span.name for span in traced.spans] == ["mesh.run"]
        assert len(warnings_of(caplog)) == 1

    async def test_a_call_span_that_cannot_be_made_current(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, traced: Traced
    ) -> None:
        from opentelemetry import context  # noqa: PLC0415 - as the engine imports it

        tracing = tracing_for(traced.provider)
        assert tracing is not None
        monkeypatch.setattr(context, "attach", lambda *_: boom())
        call = tracing.start_call({"unit_id": "a", "outcome": None})
        assert call is not None
        monkeypatch.undo()
        call.end()
        assert tracing.off
        assert tracing.start_call({"unit_id": "b"}) is None
        assert [span.name for span in traced.spans] == ["mesh.call"]
        assert len(warnings_of(caplog)) == 1

    async def test_a_propagator_that_raises(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, traced: Traced
    ) -> None:
        """The Ray side: no carrier goes with the call, and tracing stops."""
        from opentelemetry import propagate  # noqa: PLC0415 - as the engine imports it

        monkeypatch.setattr(propagate, "inject", lambda *_, **__: boom())
        carriers: list[dict[str, str] | None] = []

        async def coder(request: mesh.AuthorRequest) -> object:
            carriers.append(trace_carrier())
            return answer(request)

        untraced, _ = await run_of()
        events: list[mesh.LedgerEvent] = []
        result = await execute(
            PLAN,
            fake_roles(coder=coder),
            run_id="r",
            sinks=[mesh.MemorySink(events)],
            tracer_provider=traced.provider,
        )
        assert_same(result, untraced)
        assert carriers == [None] * 6
        assert len(warnings_of(caplog)) == 1

    def test_a_carrier_the_worker_cannot_read(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a Ray worker: the call runs without its trace context, a warning logged."""
        from opentelemetry import context, propagate  # noqa: PLC0415 - as the engine imports it

        carrier = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        with monkeypatch.context() as patch:
            patch.setattr(propagate, "extract", lambda *_, **__: boom())
            with attached_carrier(carrier):
                assert not trace.get_current_span().get_span_context().is_valid
        with monkeypatch.context() as patch:
            patch.setattr(context, "attach", lambda *_: boom())
            with attached_carrier(carrier):
                assert not trace.get_current_span().get_span_context().is_valid

        def detach_fails() -> None:
            with monkeypatch.context() as patch:
                patch.setattr(context, "detach", lambda *_: boom())
                with attached_carrier(carrier):
                    assert trace.get_current_span().get_span_context().is_valid

        # A detach that fails leaves the context attached: in a copy, not in this thread's.
        contextvars.copy_context().run(detach_fails)
        assert not trace.get_current_span().get_span_context().is_valid
        assert len(warnings_of(caplog)) == 3

    def test_a_context_for_another_loop_that_cannot_be_made(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from opentelemetry import context  # noqa: PLC0415 - as the engine imports it

        monkeypatch.setattr(context, "attach", lambda *_: boom())
        assert list(context_with_trace()) == []
        assert len(warnings_of(caplog)) == 1


class TestBoundedAttributes:
    async def test_hostile_facts(self, traced: Traced) -> None:
        """Integers outside int64 as text, names cut and cleaned, text cut, totals within int64."""
        huge = 10**5000

        def coder(request: mesh.AuthorRequest) -> object:
            mesh.note_call(
                big=10**400,
                huge=huge,
                neg=-(2**63),
                tokens=2**62,
                input_tokens=10**30,
                cost_usd=0.5,
                text="x" * 10**6,
                keyed={(1, 2): 3},
                **{"n" * 100_000: 1, "evil\x1b]52;c;eA==\x07": 2, "": 3},
            )
            return answer(request)

        def prover(request: mesh.ProofRequest) -> object:
            evidence = {"command": "c", "key_line": "K" * 200_000, "exit_code": 0}
            return answer(request, proof_evidence=evidence)

        events: list[mesh.LedgerEvent] = []
        await execute(
            [unit("a"), unit("b")],
            fake_roles(coder=FakeAdapter(coder), prover=FakeAdapter(prover)),
            tracer_provider=traced.provider,
            sinks=[mesh.MemorySink(events)],
        )
        # The ledger's facts: the same integers as text.
        facts: Any = next(
            e.data["facts"]
            for e in events
            if e.event == "adapter_call" and e.lane is mesh.Lane.CODER
        )
        assert (facts["big"], facts["neg"], facts["tokens"]) == (str(10**400), -(2**63), 2**62)
        assert facts["huge"] == f"an integer of {huge.bit_length()} bits"
        assert facts["keyed"] == "a dict"
        call = attrs_of(
            next(s for s in traced.named("mesh.call") if attrs_of(s)["mesh.lane"] == "coder")
        )
        assert call["mesh.facts.big"] == str(10**400)
        assert call["mesh.facts.neg"] == -(2**63)
        assert call["gen_ai.usage.input_tokens"] == str(10**30)
        assert call["mesh.facts." + "n" * 64] == 1
        assert call["mesh.facts.evil__52_c_eA___"] == 2
        assert call["mesh.facts._"] == 3
        assert call["mesh.facts.text"] == "x" * 499 + "…"
        for name, value in call.items():
            assert len(name) <= len("mesh.facts.") + 64
            assert not isinstance(value, int) or -(2**63) <= value < 2**63
            assert not isinstance(value, str) or len(value) <= 500
        prover_call = next(
            s for s in traced.named("mesh.call") if attrs_of(s)["mesh.lane"] == "prover"
        )
        assert len(attrs_of(prover_call)["mesh.evidence"]) == 500
        # Two coders a unit, 2**62 tokens each; 0.5 dollars each.
        for span in traced.named("mesh.unit"):
            assert (attrs_of(span)["mesh.tokens"], attrs_of(span)["mesh.cost_usd"]) == (
                2**63 - 1,
                1.0,
            )
        run = attrs_of(traced.one("mesh.run"))
        assert (run["mesh.tokens"], run["mesh.cost_usd"]) == (2**63 - 1, 2.0)
        assert "mesh.input_tokens" not in run  # text is not added up

    def test_values_the_gateway_never_sends(self, traced: Traced) -> None:
        """Whatever a call's event holds becomes a bounded attribute value."""
        tracing = tracing_for(traced.provider)
        assert tracing is not None
        event: dict[str, object] = {
            "unit_id": "a" * 1000,
            "lane": mesh.Lane.CODER,
            "holder": ("a", "b"),
            "outcome": None,
        }
        call = tracing.start_call(event)
        assert call is not None
        event.update(outcome="ok", facts={"huge": 10**5000, "big": -(10**20), "ratio": 0.5})
        call.end()
        attributes = attrs_of(traced.one("mesh.call"))
        assert attributes["mesh.unit_id"] == "a" * 499 + "…"
        assert attributes["mesh.lane"] == "coder"
        assert attributes["mesh.holder"] == "('a', 'b')"
        assert attributes["mesh.facts.huge"] == f"an integer of {(10**5000).bit_length()} bits"
        assert attributes["mesh.facts.big"] == str(-(10**20))
        assert attributes["mesh.facts.ratio"] == 0.5
