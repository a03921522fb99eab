"""pytest plugin: fixtures for testing role adapters and runs (loaded automatically)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..contracts._events import LedgerEvent
from ..engine._roles import Roles
from ._clock import ManualClock
from ._fakes import capture_ledger, fake_roles


@pytest.fixture
def mesh_roles() -> Roles:
    """A happy-path set of fake role adapters (replace roles with ``attrs.evolve``)."""
    return fake_roles()


@pytest.fixture
def mesh_ledger() -> Iterator[list[LedgerEvent]]:
    """Every ledger event of the runs started during the test."""
    with capture_ledger() as events:
        yield events


@pytest.fixture
def mesh_clock() -> ManualClock:
    """A manual clock starting at 0."""
    return ManualClock()
