"""The ledger's occurred-events filter."""

from __future__ import annotations

import pytest

import mesh


class TestOccurred:
    @pytest.mark.parametrize("value", [True, 1, 0.5, "yes", "None of it", [0], {"a": 0}])
    def test_occurred(self, value: object) -> None:
        """True, positive numbers, text other than 'none', non-empty arrays/objects occurred."""
        assert mesh.occurred(value)

    @pytest.mark.parametrize(
        "value", [False, 0, -1, 0.0, float("nan"), "", "  ", "none", "NONE", [], {}, None]
    )
    def test_did_not_occur(self, value: object) -> None:
        """Everything else did not."""
        assert not mesh.occurred(value)

    def test_filter_keeps_input_order(self) -> None:
        """Occurred keys are kept in input order; others dropped."""
        events = mesh.occurred_events({"z": 1, "a": 0, "m": "none", "b": ["x"], "c": True})
        assert list(events) == ["z", "b", "c"]

    def test_non_object_rejected(self) -> None:
        """A ledger payload must be an object."""
        with pytest.raises(mesh.ValidationError, match="expected object, got array"):
            mesh.occurred_events([1])
