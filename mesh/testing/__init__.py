"""
Test doubles for mesh and for role adapters written against it.

- `FakeAdapter`: a scripted role adapter (sync or async handler, scripted
  answers, failures, hangs and delays).
- `fake_roles`: a full happy-path set of fake adapters, any of them replaceable.
- `answer`: builds a valid output-contract-v2 answer for any request.
- `capture_ledger`: collect every ledger event of the runs started inside it.
- `ManualClock`: time that moves only when told to (or when all tasks wait).

A pytest plugin (loaded automatically) offers the fixtures ``mesh_roles``,
``mesh_ledger`` and ``mesh_clock``, and makes runs in tests strict: a run built
without ``strict=`` stops at an adapter's first mistake with
`mesh.AdapterMistake`. Opt out with ``@pytest.mark.mesh_strict(strict=False)``
(a test, class or module) or ``mesh_strict = false`` (a whole suite).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._clock import ManualClock as ManualClock
from ._fakes import FakeAdapter as FakeAdapter
from ._fakes import Hang as Hang
from ._fakes import Raise as Raise
from ._fakes import Sleep as Sleep
from ._fakes import answer as answer
from ._fakes import capture_ledger as capture_ledger
from ._fakes import fake_roles as fake_roles

__all__ = [
    "FakeAdapter",
    "Hang",
    "ManualClock",
    "Raise",
    "Sleep",
    "answer",
    "capture_ledger",
    "fake_roles",
]
