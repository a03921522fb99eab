"""
OpenTelemetry tracing of a run (``pip install 'mesh[otel]'``).

A traced run is one ``mesh.run`` span; each unit that runs is a ``mesh.unit``
span under it; each stage of an attempt a span under its unit
(``mesh.generation``, ``mesh.proof`` and the ``mesh.lease`` it waits for,
``mesh.adjudication``, ``mesh.delivery``); each adapter call a ``mesh.call``
span under its stage. A call's span is the current span while its adapter
runs: in the unit's task, in a worker thread (threads start in a copy of the
caller's context), or on a Ray worker (`trace_carrier` and `attached_carrier`
carry it there as W3C trace context), so the adapter's own spans (an LLM
client's) nest under it.

Untraced, nothing here runs: `tracing_for` returns None, the engine wraps none
of its methods, and the gateway's only cost is one attribute test per call.
OpenTelemetry itself is imported only for a traced run.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import sys
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Protocol, TypeVar, final

import attrs

from .._version import __version__
from ..contracts._enums import Lane
from ..contracts._errors import InputError
from ..contracts._records import Unit, WorkerResult
from ._gateway import CallFailure
from ._lifecycle import UnitProgress
from ._results import RunResult
from ._summary import OutcomeState, UnitOutcome

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "CallSpan",
    "TracerProviderLike",
    "Tracing",
    "attached_carrier",
    "context_with_trace",
    "trace_carrier",
    "tracing_for",
]

P = ParamSpec("P")
T = TypeVar("T")

# Facts an adapter notes (`note_call`) that add up over a unit and a run.
_TOTALLED: Final = ("input_tokens", "output_tokens", "tokens", "cost_usd")
# The GenAI semantic conventions' names for the token counts agents report.
_SEMANTIC: Final = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}
# The call event's fields that become call span attributes as they are.
_CALL_FIELDS: Final = frozenset({"duration_ms", "outcome", "facts"})
# A status description is a line in a trace viewer, not the evidence itself.
_DESCRIPTION_LIMIT: Final = 500


class TracerProviderLike(Protocol):
    """An OpenTelemetry ``TracerProvider`` (typed here without importing OpenTelemetry)."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - any provider's
        ...


@attrs.define(eq=False)
class _Totals:
    """What the calls under a span (a unit's, a run's) reported, added up."""

    parent: _Totals | None = None
    values: dict[str, float] = attrs.field(factory=dict)

    def add(self, name: str, value: float) -> None:
        totals: _Totals | None = self
        while totals is not None:
            totals.values[name] = totals.values.get(name, 0) + value
            totals = totals.parent


_TOTALS: Final[contextvars.ContextVar[_Totals | None]] = contextvars.ContextVar(
    "mesh_trace_totals", default=None
)
_CALL: Final[contextvars.ContextVar[CallSpan | None]] = contextvars.ContextVar(
    "mesh_call_span", default=None
)


def _otel(module: str) -> ModuleType:
    try:
        return importlib.import_module(f"opentelemetry.{module}")
    except ImportError as exc:
        raise InputError(
            f"tracer_provider needs OpenTelemetry: pip install 'mesh[otel]' ({exc})"
        ) from None


def tracing_for(provider: object) -> Tracing | None:
    """
    The tracing of a run given ``tracer_provider=provider``; None: the run is not traced.

    None means the global provider, if the host set one (an SDK provider, or
    any but OpenTelemetry's no-op and proxy ones); a host that never imported
    OpenTelemetry set none, and OpenTelemetry is not imported for it.
    """
    if provider is None:
        if "opentelemetry.trace" not in sys.modules:
            return None
        provider = _otel("trace").get_tracer_provider()
    trace = _otel("trace")
    if isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider):
        return None
    get_tracer = getattr(provider, "get_tracer", None)
    if not callable(get_tracer):
        raise InputError(
            "tracer_provider must be an OpenTelemetry TracerProvider, "
            f"got {type(provider).__name__}"
        )
    return Tracing(get_tracer("mesh", __version__), trace, _otel("context"))


def _described(text: str) -> str:
    return text if len(text) <= _DESCRIPTION_LIMIT else text[: _DESCRIPTION_LIMIT - 1] + "…"


def _attribute(value: object) -> Any:  # noqa: ANN401 - an OpenTelemetry attribute value
    """An event's value (JSON values, lanes) or a noted fact as an attribute value."""
    return value.value if isinstance(value, Lane) else value


def _totals_attributes(totals: _Totals) -> dict[str, float]:
    return {f"mesh.{name}": value for name, value in totals.values.items()}


@final
class CallSpan:
    """One adapter call's span: current while the adapter runs, ended with its outcome."""

    def __init__(self, tracing: Tracing, span: Span, event: dict[str, object]) -> None:
        self._tracing = tracing
        self.span = span
        # The gateway fills in the call's event as the call ends: read at `end`.
        self._event = event
        self._totals = _TOTALS.get()
        self._attached = tracing.attach(span)
        self._current = _CALL.set(self)

    def end(self) -> None:
        """Detach the span and end it with what the call's event says."""
        _CALL.reset(self._current)
        self._tracing.detach(self._attached)
        event, span = self._event, self.span
        outcome = event.get("outcome")
        # Set at once: the SDK takes a lock for each call.
        attributes: dict[str, object] = {"mesh.outcome": outcome or "cancelled"}
        for name in ("decision", "evidence", "where"):
            if (value := event.get(name)) is not None:
                attributes[f"mesh.{name}"] = value
        facts = event.get("facts")
        if isinstance(facts, Mapping):
            self._facts(facts, attributes)
        if outcome == "error":
            self._failed(attributes, str(event["error"]).split(":", 1)[0], str(event["error"]))
        elif outcome == "invalid_output_schema":
            problems = "; ".join(typing.cast("list[str]", event["problems"]))
            self._failed(attributes, outcome, problems)
        elif outcome == "timeout":
            self._failed(attributes, outcome, "the call timed out")
        span.set_attributes(attributes)  # type: ignore[arg-type]
        span.end()

    def _failed(self, attributes: dict[str, object], kind: str, description: str) -> None:
        attributes["error.type"] = kind
        self.span.set_status(self._tracing.error_status(description))

    def _facts(self, facts: Mapping[str, object], attributes: dict[str, object]) -> None:
        for name, value in facts.items():
            if value is None:
                continue
            attributes[f"mesh.facts.{name}"] = value
            if name in _SEMANTIC:
                attributes[_SEMANTIC[name]] = value
            totalled = isinstance(value, int | float) and not isinstance(value, bool)
            if totalled and name in _TOTALLED and self._totals is not None:
                self._totals.add(name, value)  # type: ignore[arg-type]

    def carrier(self) -> dict[str, str]:
        """The call's span as W3C trace context headers (for a call made elsewhere)."""
        carrier: dict[str, str] = {}
        context = self._tracing.trace.set_span_in_context(self.span)
        _otel("propagate").inject(carrier, context=context)
        return carrier


@final
class Tracing:
    """Makes a traced run's spans (see the module's docstring)."""

    def __init__(self, tracer: Tracer, trace: ModuleType, context: ModuleType) -> None:
        self._tracer = tracer
        self.trace = trace
        self._context = context

    def attach(self, span: Span) -> object:
        """Make ``span`` the current span (in this task or thread); the token to `detach`."""
        return self._context.attach(self.trace.set_span_in_context(span))

    def detach(self, token: object) -> None:
        self._context.detach(token)

    def error_status(self, description: str) -> Any:  # noqa: ANN401 - OpenTelemetry's Status
        return self.trace.Status(self.trace.StatusCode.ERROR, _described(description))

    @contextlib.contextmanager
    def _current(self, name: str, attributes: Mapping[str, object]) -> Iterator[Span]:
        """A span, current in the block; an exception out of the block is its error."""
        span = self._tracer.start_span(
            name, attributes={k: _attribute(v) for k, v in attributes.items()}
        )
        token = self.attach(span)
        try:
            yield span
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(self.error_status(f"{type(exc).__name__}: {exc}"))
            raise
        except BaseException:
            span.set_attribute("mesh.cancelled", True)  # noqa: FBT003 - an attribute value
            raise
        finally:
            self.detach(token)
            span.end()

    # -- the spans -----------------------------------------------------------------

    def start_call(self, event: dict[str, object]) -> CallSpan:
        """Start the span of the call whose ``adapter_call`` event is ``event``, current now."""
        attributes = {
            f"mesh.{name}": _attribute(value)
            for name, value in event.items()
            if name not in _CALL_FIELDS and value is not None
        }
        return CallSpan(self, self._tracer.start_span("mesh.call", attributes=attributes), event)

    def run(
        self, run_id: Callable[[], str], execute: Callable[P, Awaitable[RunResult]]
    ) -> Callable[P, Coroutine[Any, Any, RunResult]]:
        """``execute`` (`Orchestrator.execute`) in a ``mesh.run`` span."""

        @functools.wraps(execute)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> RunResult:
            totals = _Totals()
            attributes = {"mesh.run_id": run_id(), "mesh.resumed": kwargs.get("resume") is not None}
            with self._current("mesh.run", attributes) as span:
                previous = _TOTALS.set(totals)
                try:
                    result = await execute(*args, **kwargs)
                finally:
                    _TOTALS.reset(previous)
                counts = dict.fromkeys(OutcomeState, 0)
                for outcome in result.outcomes:
                    counts[outcome.state] += 1
                span.set_attributes(
                    {
                        "mesh.units": len(result.outcomes),
                        **{f"mesh.{state.value}": count for state, count in counts.items()},
                        **_totals_attributes(totals),
                    }
                )
                if unfinished := counts[OutcomeState.FAILED] + counts[OutcomeState.BLOCKED]:
                    span.set_status(self.error_status(f"{unfinished} units did not complete"))
                return result

        return traced

    def unit(
        self,
        run_id: Callable[[], str],
        run_unit: Callable[[Unit], Awaitable[None]],
        outcome_of: Callable[[str], UnitOutcome],
    ) -> Callable[[Unit], Coroutine[Any, Any, None]]:
        """``run_unit(unit)`` in a ``mesh.unit`` span that ends with the unit's outcome."""

        @functools.wraps(run_unit)
        async def traced(unit: Unit) -> None:
            attributes = {"mesh.run_id": run_id(), "mesh.unit_id": unit.id}
            with self._current("mesh.unit", attributes) as span:
                totals = _Totals(parent=_TOTALS.get())
                previous = _TOTALS.set(totals)
                try:
                    await run_unit(unit)
                finally:
                    _TOTALS.reset(previous)
                outcome = outcome_of(unit.id)
                span.set_attributes(
                    {
                        "mesh.unit_state": outcome.state.value,
                        "mesh.attempts": outcome.attempts,
                        **_totals_attributes(totals),
                    }
                )
                if outcome.accepted_candidate is not None:
                    span.set_attribute("mesh.accepted_candidate", outcome.accepted_candidate)
                if outcome.failure_code is not None:
                    span.set_attribute("mesh.failure_code", outcome.failure_code.value)
                    span.set_status(self.error_status(outcome.evidence))

        return traced

    def stage(
        self, name: str, method: Callable[P, Awaitable[T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        """A pipeline stage, ``method(progress or holder, ...)``, in a ``mesh.NAME`` span."""

        @functools.wraps(method)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> T:
            first: Any = args[0]
            progress = first if isinstance(first, UnitProgress) else first.progress
            attributes = {"mesh.unit_id": progress.unit.id, "mesh.attempt": progress.attempt}
            with self._current(f"mesh.{name}", attributes) as span:
                result = await method(*args, **kwargs)
                self._stage_result(span, name, progress, result)
                return result

        return traced

    def _stage_result(self, span: Span, name: str, progress: UnitProgress, result: object) -> None:
        if isinstance(result, CallFailure):
            span.set_attribute("mesh.failure_code", result.code.value)
            span.set_status(self.error_status(result.evidence))
        elif isinstance(result, str):
            key = "mesh.lease_id" if name == "lease" else "mesh.accepted_candidate"
            span.set_attribute(key, result)
        elif isinstance(result, WorkerResult):
            span.set_attribute("mesh.decision", result.decision.value)
        elif isinstance(result, list):
            span.set_attribute("mesh.call_failures", len(result))
        if name == "generation":
            span.set_attribute("mesh.candidates", len(progress.candidates))


def trace_carrier() -> dict[str, str] | None:
    """The trace context of the adapter call in progress, to send with it (None: untraced)."""
    call = _CALL.get()
    return None if call is None else call.carrier()


def context_with_trace() -> contextvars.Context:
    """
    An empty context, but for the current trace context: to run code on another loop in.

    An adapter that hands its work to an event loop of its own (as the
    pydantic-ai adapters do under trio) starts it in this context: nothing of
    the caller's loop goes with it, and the spans it makes nest under the call's.
    """
    fresh = contextvars.Context()
    otel = sys.modules.get("opentelemetry.context")
    if otel is not None:
        fresh.run(otel.attach, otel.get_current())
    return fresh


def attached_carrier(carrier: Mapping[str, str] | None) -> contextlib.AbstractContextManager[None]:
    """
    Make a call's trace context (`trace_carrier`) current in the block: its remote side.

    Nothing happens without a carrier, or where OpenTelemetry is not installed
    (no adapter there can have spans of its own).
    """
    if carrier is None:
        return contextlib.nullcontext()
    try:
        propagate = importlib.import_module("opentelemetry.propagate")
        context = importlib.import_module("opentelemetry.context")
    except ImportError:
        return contextlib.nullcontext()
    return _attached(context, propagate.extract(carrier))


@contextlib.contextmanager
def _attached(context: ModuleType, extracted: Context) -> Iterator[None]:
    token = context.attach(extracted)
    try:
        yield
    finally:
        context.detach(token)
