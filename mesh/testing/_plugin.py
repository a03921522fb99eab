"""
pytest plugin: fixtures for testing role adapters and runs (loaded automatically).

Inside every test, runs are strict unless they say otherwise: an `Orchestrator`
(or `mesh.run`) built without ``strict=`` stops at an adapter's first mistake
with `mesh.AdapterMistake`. A test opts out with
``@pytest.mark.mesh_strict(False)`` (on a test, a class or a module's
``pytestmark``), a whole suite with ``mesh_strict = false`` in its pytest
configuration; ``strict=`` given to the run always wins.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..contracts._events import LedgerEvent
from ..engine._mistakes import strict_by_default
from ..engine._roles import Roles
from ._clock import ManualClock
from ._fakes import capture_ledger, fake_roles

_MARKER = "mesh_strict"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``mesh_strict`` setting."""
    parser.addini(
        _MARKER,
        type="bool",
        default=True,
        help="mesh runs in tests stop at an adapter's first mistake (default: true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``mesh_strict`` marker."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(strict=True): runs in this test are strict (False: they record "
        "an adapter's mistakes and go on)",
    )


@pytest.fixture(autouse=True)
def _mesh_strict_default(request: pytest.FixtureRequest) -> Iterator[None]:
    """Runs built without ``strict=`` during the test are strict, unless marked or set otherwise."""
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        strict = request.config.getini(_MARKER)
    else:
        strict = marker.kwargs.get("strict", marker.args[0] if marker.args else True)
    with strict_by_default(strict=strict):
        yield


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
