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

__all__ = ["CALL_FACTS", "note_call"]

CALL_FACTS: Final[contextvars.ContextVar[dict[str, object] | None]] = contextvars.ContextVar(
    "mesh_call_facts", default=None
)
# A ledger line stays a line: facts are evidence, not a transcript.
_TEXT_LIMIT: Final = 2000
_FACTS_LIMIT: Final = 32


def _plain(value: object) -> object:
    """``value`` as a bounded JSON value; anything else as its (bounded) text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)[:_TEXT_LIMIT]
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def note_call(**facts: object) -> bool:
    """
    Record ``facts`` on the ledger event of the adapter call in progress.

    Call it from inside a role adapter (sync or async, in any thread or task
    the call started): ``mesh.note_call(turns=3, input_tokens=1200,
    cost_usd=0.02)``. Numbers, booleans and None are kept as they are; any
    other value becomes text of at most 2,000 characters; at most 32 facts
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
