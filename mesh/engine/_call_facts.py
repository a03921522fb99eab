"""
Facts an adapter reports about the call it is answering, for that call's ledger event.

An agent adapter knows what the engine cannot see: the turns the agent took, the
tokens it spent, what it cost, its final message. `note_call` puts them on the
``adapter_call`` event of the call in progress (under ``facts``), so the ledger
shows each agent call with its evidence. The gateway gives every call a fresh
holder through a context variable, which worker threads and child tasks see too.
"""

from __future__ import annotations

import contextvars
import json
import math
from typing import Final

import anyio

__all__ = ["CALL_BEAT", "CALL_FACTS", "CallBeat", "heartbeat", "heartbeat_period", "note_call"]

CALL_FACTS: Final[contextvars.ContextVar[dict[str, object] | None]] = contextvars.ContextVar(
    "mesh_call_facts", default=None
)
# A ledger line stays a line: facts are evidence, not a transcript.
_TEXT_LIMIT: Final = 2000
_FACTS_LIMIT: Final = 32


def _plain(value: object) -> object:
    """``value`` as a bounded JSON value; anything else as its (bounded) text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:  # what a ledger's readers (and OTLP) take as a number
            return value
        try:
            text = str(value)
        except ValueError:  # more digits than Python writes out
            return f"an integer of {value.bit_length()} bits"
    elif isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, default=str)[:_TEXT_LIMIT]
        except (TypeError, ValueError, RecursionError):  # keys JSON lacks, cycles, depth
            text = f"a {type(value).__name__}"
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def note_call(**facts: object) -> bool:
    """
    Record ``facts`` on the ledger event of the adapter call in progress.

    Call it from inside a role adapter (sync or async, in any thread or task
    the call started): ``mesh.note_call(turns=3, input_tokens=1200,
    cost_usd=0.02)``. Numbers, booleans and None are kept as they are (an
    integer outside int64 as its text); any other value becomes text of at
    most 2,000 characters; at most 32 facts
    are kept per call, later values of a name replacing earlier ones. Outside
    a call (a unit test calling the adapter directly) nothing is recorded.

    Returns:
        True if the facts were recorded for a call.

    .. versionadded:: 0.1.0
    """
    holder = CALL_FACTS.get()
    if holder is None:
        return False
    for name, value in facts.items():
        if name in holder or len(holder) < _FACTS_LIMIT:
            holder[name] = _plain(value)
    return True


class CallBeat:
    """One call's heartbeats: how many, and what the watchdog made of them."""

    __slots__ = ("changed", "count", "every", "hung", "scope", "seen")

    def __init__(self, every: float) -> None:
        self.count = 0
        """Heartbeats so far (an int: a beat from another thread only has to change it)."""
        self.every = every
        """Seconds between the heartbeats of mesh's own process-running adapters."""
        self.seen = 0
        self.changed = 0
        """The watchdog's quarter in which it last saw the count change."""
        self.hung = False
        self.scope = anyio.CancelScope()
        """What the adapter runs in: cancelled when its heartbeats stop."""


CALL_BEAT: Final[contextvars.ContextVar[CallBeat | None]] = contextvars.ContextVar(
    "mesh_call_beat", default=None
)


def heartbeat() -> bool:
    """
    Say that the adapter call in progress is alive and working.

    Call it from inside a role adapter, as often as work gets done (sync or
    async, from any thread or task the call started): a run with
    ``heartbeat_timeout`` treats a call that has sent heartbeats and then
    stops for that long as hung, and ends it (as a timeout, retried by its
    lane's `RetryPolicy`) long before its ``call_timeout``. A call that never
    sends one is timed by ``call_timeout`` alone. A thread the adapter starts
    must carry the call's context for its heartbeats to count
    (``anyio.to_thread.run_sync``, ``asyncio.to_thread`` and
    ``contextvars.copy_context().run`` do; a bare ``threading.Thread`` does
    not). mesh's own adapters that
    run a command (`CommandCoder`, `CommandProver`, the agents) send
    heartbeats while their process runs. The count is on the call's
    ``adapter_call`` ledger event (``heartbeats``). Outside a call, or in a
    run without ``heartbeat_timeout``, nothing happens.

    Returns:
        True if a run is listening for this call's heartbeats.

    .. versionadded:: 0.2.0
    """
    beat = CALL_BEAT.get()
    if beat is None:
        return False
    beat.count += 1
    return True


def heartbeat_period() -> float | None:
    """Seconds between heartbeats the call in progress wants (None: nobody listens)."""
    beat = CALL_BEAT.get()
    return None if beat is None else beat.every
