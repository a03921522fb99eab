"""Plan states written out only when read are the states a copy per delivery would give."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mesh.engine._plan_state import CompletedStep, with_completed

BASE: dict[str, Any] = {
    "explanation": "x",
    "plan": [{"id": f"s{i}", "step": f"do {i}", "status": "pending"} for i in range(6)],
}


@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.booleans()), max_size=12),
    st.lists(st.integers(0, 11), max_size=12),
)
def test_each_state_is_its_steps_completed_whenever_it_is_read(
    deliveries: list[tuple[int, bool, bool]], read_late: list[int]
) -> None:
    """States read at once, later, out of order or never equal eagerly copied ones, failures too."""
    delivered: list[int] = []
    eager: dict[str, Any] = BASE
    states: list[tuple[CompletedStep, dict[str, Any]]] = []
    for step, read_now, succeeds in deliveries:
        state = CompletedStep(BASE, delivered, len(delivered), step)
        expected = with_completed(eager, [step])
        if read_now:
            assert state.document() == expected
        states.append((state, expected))
        if succeeds:  # the engine records a step only once its delivery is done
            delivered.append(step)
            eager = expected
    for index in read_late:
        if index < len(states):
            state, expected = states[index]
            assert state == expected
            assert json.loads(json.dumps(state.document())) == expected
    for state, expected in states:
        assert state.document() is state.document()
        assert dict(state) == expected
        assert len(state) == len(expected)
        assert repr(state) == repr(expected)
    assert with_completed(BASE, delivered) == eager
    assert BASE["plan"][0]["status"] == "pending"  # the base is never changed
