"""
Backpressure: the concurrency limit under the budget's target. Pure: no I/O.

A negative signal (a reject, timeout, schema failure or aborted call) halves
the limit (never below 1) and turns on scope serialization; a clean stretch of
units restores the target. The scheduler applies the limit to its capacity.
"""

from __future__ import annotations

import attrs

__all__ = ["Backpressure"]


@attrs.define(kw_only=True)
class Backpressure:
    """The limit the scheduler obeys, and why."""

    target: int
    """The budget's active-unit target (the concurrency authority)."""
    limit: int = attrs.field()
    """What may run now: the target, or less under backpressure."""
    clean_stretch: int = 3
    """Clean units in a row needed to restore the target."""
    serialize_overlaps: bool = False
    """Under backpressure, units whose write scopes overlap do not run together."""
    clean_streak: int = 0
    signals: int = 0
    restores: int = 0

    @limit.default
    def _limit_default(self) -> int:
        return self.target

    @property
    def pressured(self) -> bool:
        """Whether backpressure is in effect."""
        return self.serialize_overlaps

    def retarget(self, target: int) -> bool:
        """Adopt a new budget target; the limit follows it, capped while pressured."""
        target = max(1, target)
        before = self.limit
        self.target = target
        self.limit = min(self.limit, target) if self.pressured else target
        return self.limit != before

    def signal(self) -> bool:
        """A negative signal: halve the limit and serialize overlaps. True if the limit fell."""
        self.signals += 1
        self.clean_streak = 0
        self.serialize_overlaps = True
        before = self.limit
        self.limit = max(1, self.limit // 2)
        return self.limit != before

    def clean(self) -> bool:
        """A unit finished with no negative signal. True when this restored the target."""
        if not self.pressured:
            return False
        self.clean_streak += 1
        if self.clean_streak < self.clean_stretch:
            return False
        self.limit = self.target
        self.serialize_overlaps = False
        self.clean_streak = 0
        self.restores += 1
        return True
