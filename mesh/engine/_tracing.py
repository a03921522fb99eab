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

Tracing never takes a run down: every call into OpenTelemetry (the host's span
processors, exporters and propagators run inside them) is guarded, and the
first one that raises is logged (the ``mesh.tracing`` logger) and turns
tracing off for the rest of the run, the spans already started still ended.
Span attributes are bounded: integers outside int64 (all OTLP carries) as
text, totals within int64, text to 500 characters, fact names to 64
characters of ``[A-Za-z0-9_.-]``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import logging
import re
import sys
import traceback
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
# A status description, and any text attribute, is a line in a trace viewer, not
# the evidence itself.
_TEXT_LIMIT: Final = 500
# An exception's traceback, on its span's exception event.
_STACK_LIMIT: Final = 4000
# OTLP carries integers as int64.
_INT64: Final = 2**63 - 1
# A noted fact's name in its attribute's: no control characters, no megabyte keys.
_NAME_LIMIT: Final = 64
_NOT_IN_NAME: Final = re.compile(r"[^A-Za-z0-9_.-]")

_LOG: Final = logging.getLogger("mesh.tracing")


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
        value = _within_int64(value)  # an int a float can be added to
        totals: _Totals | None = self
        while totals is not None:
            totals.values[name] = _within_int64(totals.values.get(name, 0) + value)
            totals = totals.parent


def _within_int64(value: float) -> float:
    return max(-_INT64 - 1, min(_INT64, value)) if isinstance(value, int) else value


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
    try:
        tracer = get_tracer("mesh", __version__)
    except Exception as exc:  # noqa: BLE001 - the host's provider: the run goes on untraced
        _untraced(exc)
        return None
    return Tracing(tracer, trace, _otel("context"))


def _untraced(exc: Exception) -> None:
    _LOG.warning("OpenTelemetry tracing failed; going on untraced", exc_info=exc)


def _bounded(text: str, limit: int = _TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _attribute(value: object) -> Any:  # noqa: ANN401 - an OpenTelemetry attribute value
    """An event's value (JSON values, lanes) or a noted fact as a bounded attribute value."""
    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if -_INT64 - 1 <= value <= _INT64:
            return value
        try:
            return _bounded(str(value))
        except ValueError:  # more digits than Python converts
            return f"an integer of {value.bit_length()} bits"
    if isinstance(value, Lane):
        return value.value
    return _bounded(value if isinstance(value, str) else str(value))


def _attributes(values: Mapping[str, object]) -> dict[str, Any]:
    return {name: _attribute(value) for name, value in values.items()}


def _fact_name(name: str) -> str:
    return _NOT_IN_NAME.sub("_", name[:_NAME_LIMIT]) or "_"


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
        self._attached = tracing.guarded(tracing.attach, span)
        self._current = _CALL.set(self)

    def end(self) -> None:
        """Detach the span and end it with what the call's event says."""
        _CALL.reset(self._current)
        tracing = self._tracing
        if self._attached is not None:
            tracing.closing(tracing.detach, self._attached)
        tracing.guarded(self._ended)
        tracing.closing(self.span.end)

    def _ended(self) -> None:
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
        span.set_attributes(_attributes(attributes))

    def _failed(self, attributes: dict[str, object], kind: str, description: str) -> None:
        attributes["error.type"] = kind
        self.span.set_status(self._tracing.error_status(description))

    def _facts(self, facts: Mapping[str, object], attributes: dict[str, object]) -> None:
        for name, value in facts.items():
            if value is None:
                continue
            attributes[f"mesh.facts.{_fact_name(name)}"] = value
            if name in _SEMANTIC:
                attributes[_SEMANTIC[name]] = value
            totalled = isinstance(value, int | float) and not isinstance(value, bool)
            if totalled and name in _TOTALLED and self._totals is not None:
                self._totals.add(name, value)  # type: ignore[arg-type]

    def carrier(self) -> dict[str, str] | None:
        """The call's span as W3C trace context headers (for a call made elsewhere)."""
        return self._tracing.guarded(self._carrier)

    def _carrier(self) -> dict[str, str]:
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
        self.off = False
        """Set by the first error out of OpenTelemetry: no more spans in this run."""

    def guarded(self, action: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T | None:
        """``action(...)``, unless tracing is off or it raises (which turns tracing off)."""
        if self.off:
            return None
        try:
            return action(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - never the run's: logged once
            self._failed(exc)
            return None

    def closing(self, action: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """``action(...)``, ending what was started, tracing off or not; an error turns it off."""
        try:
            action(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - never the run's: logged once
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self.off:
            self.off = True
            _untraced(exc)

    def attach(self, span: Span) -> object:
        """Make ``span`` the current span (in this task or thread); the token to `detach`."""
        return self._context.attach(self.trace.set_span_in_context(span))

    def detach(self, token: object) -> None:
        self._context.detach(token)

    def error_status(self, description: str) -> Any:  # noqa: ANN401 - OpenTelemetry's Status
        return self.trace.Status(self.trace.StatusCode.ERROR, _bounded(description))

    def _start(self, name: str, attributes: Mapping[str, object]) -> Span:
        return self._tracer.start_span(name, attributes=_attributes(attributes))

    @contextlib.contextmanager
    def _current(self, name: str, attributes: Mapping[str, object]) -> Iterator[Span | None]:
        """A span (None: tracing is off), current in the block; an exception out of it its error."""
        span = self.guarded(self._start, name, attributes)
        if span is None:
            yield None
            return
        token = self.guarded(self.attach, span)
        try:
            yield span
        except Exception as exc:
            self.guarded(self._errored, span, exc)
            raise
        except BaseException:
            self.guarded(span.set_attribute, "mesh.cancelled", True)  # noqa: FBT003
            raise
        finally:
            if token is not None:
                self.closing(self.detach, token)
            self.closing(span.end)

    def _errored(self, span: Span, exc: Exception) -> None:
        description = f"{type(exc).__name__}: {exc}"
        stack = "".join(traceback.format_exception(exc))
        span.record_exception(
            exc,
            attributes={
                "exception.message": _bounded(str(exc)),
                "exception.stacktrace": _bounded(stack, _STACK_LIMIT),
            },
        )
        span.set_status(self.error_status(description))

    # -- the spans -----------------------------------------------------------------

    def start_call(self, event: dict[str, object]) -> CallSpan | None:
        """Start the span of the call whose ``adapter_call`` event is ``event``, current now."""
        attributes = {
            f"mesh.{name}": value
            for name, value in event.items()
            if name not in _CALL_FIELDS and value is not None
        }
        span = self.guarded(self._start, "mesh.call", attributes)
        return None if span is None else CallSpan(self, span, event)

    def run(
        self, run_id: Callable[[], str], execute: Callable[P, Awaitable[RunResult]]
    ) -> Callable[P, Coroutine[Any, Any, RunResult]]:
        """``execute`` (`Orchestrator.execute`) in a ``mesh.run`` span."""

        @functools.wraps(execute)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> RunResult:
            self.off = False  # each run tries again
            totals = _Totals()
            attributes = {"mesh.run_id": run_id(), "mesh.resumed": kwargs.get("resume") is not None}
            with self._current("mesh.run", attributes) as span:
                previous = _TOTALS.set(totals)
                try:
                    result = await execute(*args, **kwargs)
                finally:
                    _TOTALS.reset(previous)
                if span is not None:
                    self.guarded(self._run_ended, span, result, totals)
                return result

        return traced

    def _run_ended(self, span: Span, result: RunResult, totals: _Totals) -> None:
        counts = dict.fromkeys(OutcomeState, 0)
        for outcome in result.outcomes:
            counts[outcome.state] += 1
        span.set_attributes(
            _attributes(
                {
                    "mesh.units": len(result.outcomes),
                    **{f"mesh.{state.value}": count for state, count in counts.items()},
                    **_totals_attributes(totals),
                }
            )
        )
        if unfinished := counts[OutcomeState.FAILED] + counts[OutcomeState.BLOCKED]:
            span.set_status(self.error_status(f"{unfinished} units did not complete"))

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
                if span is not None:
                    self.guarded(lambda: self._unit_ended(span, outcome_of(unit.id), totals))

        return traced

    def _unit_ended(self, span: Span, outcome: UnitOutcome, totals: _Totals) -> None:
        attributes: dict[str, object] = {
            "mesh.unit_state": outcome.state.value,
            "mesh.attempts": outcome.attempts,
            **_totals_attributes(totals),
        }
        if outcome.accepted_candidate is not None:
            attributes["mesh.accepted_candidate"] = outcome.accepted_candidate
        if outcome.failure_code is not None:
            attributes["mesh.failure_code"] = outcome.failure_code.value
            span.set_status(self.error_status(outcome.evidence))
        span.set_attributes(_attributes(attributes))

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
                if span is not None:
                    self.guarded(self._stage_ended, span, name, progress, result)
                return result

        return traced

    def _stage_ended(self, span: Span, name: str, progress: UnitProgress, result: object) -> None:
        attributes: dict[str, object] = {}
        if isinstance(result, CallFailure):
            attributes["mesh.failure_code"] = result.code.value
            span.set_status(self.error_status(result.evidence))
        elif isinstance(result, str):
            attributes["mesh.lease_id" if name == "lease" else "mesh.accepted_candidate"] = result
        elif isinstance(result, WorkerResult):
            attributes["mesh.decision"] = result.decision.value
        elif isinstance(result, list):
            attributes["mesh.call_failures"] = len(result)
        if name == "generation":
            attributes["mesh.candidates"] = len(progress.candidates)
        span.set_attributes(_attributes(attributes))


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
        try:
            fresh.run(otel.attach, otel.get_current())
        except Exception as exc:  # noqa: BLE001 - the call goes on untraced
            _untraced(exc)
            return contextvars.Context()
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
    try:
        extracted = propagate.extract(carrier)
    except Exception as exc:  # noqa: BLE001 - the host's propagator: the call goes on untraced
        _untraced(exc)
        return contextlib.nullcontext()
    return _attached(context, extracted)


@contextlib.contextmanager
def _attached(context: ModuleType, extracted: Context) -> Iterator[None]:
    try:
        token = context.attach(extracted)
    except Exception as exc:  # noqa: BLE001 - the call goes on untraced
        _untraced(exc)
        yield
        return
    try:
        yield
    finally:
        try:
            context.detach(token)
        except Exception as exc:  # noqa: BLE001 - the call is over: only its trace is lost
            _untraced(exc)
