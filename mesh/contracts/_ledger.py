"""The ledger's occurred-events rule. Pure: no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ._convert import type_name
from ._errors import ValidationError

__all__ = ["occurred", "occurred_events"]


def occurred(value: object) -> bool:
    """
    Whether a ledger value records something that happened.

    True for ``true``, a number above zero, a non-empty string other than
    ``none`` (any case), and a non-empty array or object.

    .. versionadded:: 0.1.0
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return not math.isnan(value) and value > 0
    if isinstance(value, str):
        text = value.strip()
        return bool(text) and text.lower() != "none"
    if isinstance(value, list | tuple | Mapping):
        return len(value) > 0
    return False


def occurred_events(payload: object) -> dict[str, object]:
    """
    Keep, in input order, the ledger keys whose value occurred (see `occurred`).

    Raises:
        ValidationError: When ``payload`` is not a JSON object.

    .. versionadded:: 0.1.0
    """
    if not isinstance(payload, Mapping):
        raise ValidationError("ledger", [f"$: expected object, got {type_name(payload)}"])
    return {str(key): value for key, value in payload.items() if occurred(value)}
