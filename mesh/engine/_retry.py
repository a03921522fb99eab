"""
Retry policies: how often a lane's call is made again, after what, and how long to wait.

Pure: the gateway asks a policy whether a failed call is made again and how
long to wait first; the random draw for jitter is handed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

import attrs

from ..contracts._enums import FailureCode, Lane
from ..contracts._errors import InputError

__all__ = ["DEFAULT_RETRY", "RETRYABLE", "RetryPolicy", "checked_retry"]

_DAY: Final = 86_400.0
_MOST: Final = 100

RETRYABLE: Final = frozenset(
    {
        FailureCode.TIMEOUT_RETRY_EXHAUSTED,
        FailureCode.TOOLING_UNAVAILABLE,
        FailureCode.INVALID_OUTPUT_SCHEMA,
    }
)
"""The codes a failed call can have: it timed out (or its heartbeats stopped), it raised,
or it answered invalidly."""


def _codes(value: object) -> frozenset[FailureCode]:
    if isinstance(value, str) or not isinstance(value, (set, frozenset, list, tuple)):
        raise InputError(f"retry_on must be a set of failure codes, got {type(value).__name__}")
    codes = set()
    for code in value:
        try:
            codes.add(FailureCode(code))
        except ValueError:
            raise InputError(f"retry_on: {code!r} is not a failure code") from None
    if wrong := sorted(codes - RETRYABLE):
        raise InputError(
            f"retry_on: a call never fails with {', '.join(wrong)} "
            f"(it can: {', '.join(sorted(RETRYABLE))})"
        )
    return frozenset(codes)


def _within(value: object, least: float, most: float) -> bool:
    """Whether ``value`` is a real number (not a bool) from ``least`` to ``most``."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and least <= value <= most
    )


def _seconds(name: str) -> Callable[[object, object, object], None]:
    def check(_: object, __: object, value: object) -> None:
        if not _within(value, 0, _DAY):
            raise InputError(f"{name} must be seconds between 0 and 86400, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """
    How one lane's calls are made again after they fail.

    A call that fails with a code in ``retry_on`` is made again, up to
    ``calls`` calls for one request in all, after a wait: ``backoff``
    seconds before the first retry, times ``multiplier`` before each next
    one, at most ``max_backoff``, each wait drawn at random between
    ``(1 - jitter)`` and ``(1 + jitter)`` of itself (so that many units
    failing at once do not all come back at once). When ``replacement`` is
    true, the last call goes to the lane's replacement adapter
    (`Roles.replacements`), where one is given.

    The default is mesh's classic policy: a call that times out is made once
    more, then once by the replacement; a call that raised or answered
    invalidly is not made again. A lane whose adapter is not safe to re-run
    (`mesh.not_rerun_safe`) is never called twice for one request, whatever
    its policy. Each retry is an ``adapter_retry`` (or
    ``adapter_replacement``) ledger event with the failure and the wait, and
    ``run_started`` records every lane's policy.

    .. versionadded:: 0.2.0
    """

    calls: int = attrs.field(default=3)
    """Calls for one request at most, the first included (1: never again)."""
    retry_on: frozenset[FailureCode] = attrs.field(
        default=frozenset({FailureCode.TIMEOUT_RETRY_EXHAUSTED}), converter=_codes
    )
    """Which failures are retried: ``timeout_retry_exhausted`` (the call timed out or its
    heartbeats stopped), ``tooling_unavailable`` (it raised), ``invalid_output_schema``
    (its answer broke the contract)."""
    backoff: float = attrs.field(default=0.0, validator=_seconds("backoff"))
    """Seconds to wait before the first retry."""
    multiplier: float = attrs.field(default=2.0)
    """Each next wait is the last one times this (at least 1)."""
    max_backoff: float = attrs.field(default=60.0, validator=_seconds("max_backoff"))
    """The longest wait."""
    jitter: float = attrs.field(default=0.0)
    """How far each wait is drawn from its value, as a fraction of it (0 to 1)."""
    replacement: bool = attrs.field(default=True)
    """Whether the last call goes to the lane's replacement adapter, when there is one."""

    @calls.validator
    def _check_calls(self, _: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MOST:
            raise InputError(f"calls must be a whole number from 1 to 100, got {value!r}")

    @multiplier.validator
    def _check_multiplier(self, _: object, value: object) -> None:
        if not _within(value, 1, _MOST):
            raise InputError(f"multiplier must be a number from 1 to 100, got {value!r}")

    @jitter.validator
    def _check_jitter(self, _: object, value: object) -> None:
        if not _within(value, 0, 1):
            raise InputError(f"jitter must be a fraction from 0 to 1, got {value!r}")

    @replacement.validator
    def _check_replacement(self, _: object, value: object) -> None:
        if not isinstance(value, bool):
            raise InputError(f"replacement must be True or False, got {value!r}")

    def wait(self, retry: int, draw: float) -> float:
        """
        Seconds to wait before retry number ``retry`` (from 1).

        ``draw`` is a random number in [0, 1) (0.5 gives the wait without jitter).
        """
        base = min(self.backoff * self.multiplier ** (retry - 1), self.max_backoff)
        return min(base * (1 + self.jitter * (2 * draw - 1)), self.max_backoff)

    @classmethod
    def from_document(cls, document: object) -> RetryPolicy:
        """A policy from `to_document`'s JSON (`InputError` when it is not one)."""
        if not isinstance(document, Mapping):
            raise InputError(f"a retry policy is a JSON object, got {type(document).__name__}")
        if unknown := sorted(set(document) - set(attrs.fields_dict(cls))):
            raise InputError(f"a retry policy has no {', '.join(map(repr, unknown))}")
        return cls(**document)

    def to_document(self) -> dict[str, object]:
        """The policy as JSON values (for the ledger)."""
        return {
            "calls": self.calls,
            "retry_on": sorted(code.value for code in self.retry_on),
            "backoff": self.backoff,
            "multiplier": self.multiplier,
            "max_backoff": self.max_backoff,
            "jitter": self.jitter,
            "replacement": self.replacement,
        }


DEFAULT_RETRY: Final = RetryPolicy()


def checked_retry(retry: object) -> dict[Lane, RetryPolicy]:
    """
    Every lane's policy from `Orchestrator`'s ``retry``.

    One `RetryPolicy` for every lane, or a mapping of lanes (or their names)
    to policies, the lanes left out keeping the default.
    """
    if retry is None:
        return dict.fromkeys(Lane, DEFAULT_RETRY)
    if isinstance(retry, RetryPolicy):
        return dict.fromkeys(Lane, retry)
    if not isinstance(retry, Mapping):
        raise InputError(
            "retry must be a RetryPolicy or a mapping of lanes to RetryPolicy, "
            f"got {type(retry).__name__}"
        )
    policies = dict.fromkeys(Lane, DEFAULT_RETRY)
    for lane, policy in retry.items():
        try:
            known = Lane(lane)
        except ValueError:
            raise InputError(f"retry: {lane!r} is not a lane") from None
        if not isinstance(policy, RetryPolicy):
            raise InputError(f"retry[{known.value!r}]: expected RetryPolicy, got {policy!r}")
        policies[known] = policy
    return policies
