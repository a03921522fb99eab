"""
Strict runs: an adapter's first mistake stops the run, explained.

A mistake is an answer that breaks output contract v2 (or does not fit the
request it answers) or an exception from the call. A lenient run records it
(an ``adapter_call`` event, the unit's evidence, backpressure) and goes on; a
strict run records it, then raises `AdapterMistake`. Timeouts are not
mistakes: a well-behaved adapter may be slow, and the engine retries it.

Whether an `Orchestrator` built without ``strict=`` is strict is the *default
strictness*: False, except while mesh's pytest plugin runs a test (see
`strict_by_default`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Final, final

from ..contracts._enums import Lane
from ..contracts._errors import AdapterMistake, InputError
from ._roles import Roles

__all__ = [
    "Mistakes",
    "adapter_name",
    "checked_strict",
    "default_strict",
    "stopped_by",
    "strict_by_default",
]

_NAME_LIMIT: Final = 200


class _Default:
    """The default strictness: process-wide, set for the length of a test by the plugin."""

    # Not a context variable: anyio's pytest plugin runs a test in a task made when
    # its first async fixture ran, with the context of that moment, so a value a
    # fixture sets later would not reach it. Tests of one process run one at a time.
    strict = False


def default_strict() -> bool:
    """Whether a run built without ``strict=`` is strict here (False outside tests)."""
    return _Default.strict


@contextlib.contextmanager
def strict_by_default(*, strict: bool) -> Iterator[None]:
    """Make runs built without ``strict=`` strict (or not) inside the block."""
    before = _Default.strict
    _Default.strict = checked_strict(strict, "strict")
    try:
        yield
    finally:
        _Default.strict = before


def checked_strict(strict: object, name: str) -> bool:
    """``strict`` when it is True or False."""
    if type(strict) is not bool:
        raise InputError(f"{name} must be True or False, got {strict!r}")
    return strict


def adapter_name(adapter: object) -> str:
    """
    How a mistake names an adapter: a function's or class's qualified name, else its repr.

    An object without a ``__repr__`` of its own is named by its class.
    """
    qualname = getattr(adapter, "__qualname__", None)
    if type(qualname) is str:  # a function, a bound method, a class
        return f"{getattr(adapter, '__module__', None) or '?'}.{qualname}"
    kind = type(adapter)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__repr__ is object.__repr__:
        return f"{name} instance"
    try:
        text = repr(adapter)
    except Exception:  # noqa: BLE001 - a broken repr must not hide the mistake
        return f"{name} instance"
    return text if len(text) <= _NAME_LIMIT else f"{text[: _NAME_LIMIT - 1]}…"


@final
class Mistakes:
    """
    A strict run's mistakes: each built with what explains it; the first one kept.

    Args:
        roles: The adapters as given (the bound ones may be wrapped), to name them.
    """

    def __init__(self, roles: Roles) -> None:
        self._roles = roles
        self.first: AdapterMistake | None = None
        """The run's first mistake: the one `Orchestrator.execute` raises."""

    def found(
        self,
        *,
        lane: Lane,
        request: object,
        unit_id: str,
        candidate_id: str,
        attempt: int,
        call: int,
        replacement: bool,
        problems: Sequence[str] = (),
        error: str | None = None,
    ) -> AdapterMistake:
        """The `AdapterMistake` of one call (``error``: it raised; else ``problems``)."""
        adapter = self._roles.for_lane(lane)
        if replacement:
            adapter = self._roles.replacements.get(lane, adapter)
        found = AdapterMistake(
            unit_id=unit_id,
            lane=lane,
            candidate_id=candidate_id,
            attempt=attempt,
            call=call,
            adapter=adapter_name(adapter),
            request_kind=type(request).__name__,
            problems=problems,
            error=error,
        )
        if self.first is None:
            self.first = found
        return found


def stopped_by(mistakes: Mistakes | None, exc: BaseException) -> AdapterMistake | None:
    """
    The first mistake of a strict run that mistakes alone stopped (None: raise ``exc`` as it is).

    The run's tasks raise their mistakes as an exception group; anything else in
    it (or a cancellation from outside) is not hidden behind a mistake.
    """
    first = mistakes.first if mistakes is not None else None
    if first is None or not isinstance(exc, BaseExceptionGroup):
        return None
    _, rest = exc.split(AdapterMistake)
    return first if rest is None else None
