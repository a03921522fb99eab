"""
The unit state machine: the declarative table of ``_lifecycle`` run by ``transitions``.

One `transitions.Machine` serves every unit: a unit's `UnitProgress` is the
model, and only the unit's own task fires its triggers, so each unit has a
single writer. Its only callbacks are the gates, run synchronously in the
calling task, which keeps the machine safe under both asyncio and trio (no
AsyncMachine, no tasks of its own). With no enter, exit or transition
callbacks, its state and transition classes leave out those layers and their
logging: the machine never writes to the host's logs. ``transitions`` stays
private behind `UnitState` and `Trigger`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from transitions import EventData, Machine, State, Transition

from ..contracts._errors import GateNotMet, TransitionError
from ._lifecycle import GATES, TRANSITION_TABLE, Trigger, UnitProgress, UnitState

__all__ = ["UnitMachine"]

# The machine keeps a unit's state as its name; read back, it is one lookup, not an enum call.
_STATES: Final = {state.value: state for state in UnitState}


def _gate_condition(gate: str) -> Callable[[EventData], bool]:
    check = GATES[gate]

    def condition(event: EventData) -> bool:
        progress = event.model
        assert isinstance(progress, UnitProgress)  # noqa: S101 - only UnitMachine.fire triggers
        return check(progress)

    return condition


class _QuietState(State):
    """A state of a machine with no enter or exit callbacks: entering or leaving it is nothing."""

    def enter(self, event_data: EventData) -> None:
        """Nothing to run (and nothing to log)."""

    def exit(self, event_data: EventData) -> None:
        """Nothing to run (and nothing to log)."""


class _GatedTransition(Transition):
    """A transition of a machine with no callbacks: its gate, then the state change."""

    def execute(self, event_data: EventData) -> bool:
        """Change the state when the gate holds (True), without the callback and log layers."""
        if not all(condition.check(event_data) for condition in self.conditions):
            return False
        self._change_state(event_data)
        return True


class _Lifecycle(Machine):
    """``transitions`` machine with the two classes above (its documented extension point)."""

    state_cls = _QuietState
    transition_cls = _GatedTransition


class UnitMachine:
    """Fires triggers on unit progress records, raising mesh errors for illegal moves."""

    def __init__(self) -> None:
        self._machine: Final = _Lifecycle(
            model=None,
            states=[state.value for state in UnitState],
            initial=UnitState.PLANNED.value,
            transitions=[
                {
                    "trigger": row.trigger.value,
                    "source": [state.value for state in row.sources],
                    "dest": row.dest.value,
                    "conditions": [_gate_condition(row.gate)],
                }
                for row in TRANSITION_TABLE
            ],
            auto_transitions=False,
            send_event=True,
        )
        self._gates = {
            (row.trigger, source): row.gate for row in TRANSITION_TABLE for source in row.sources
        }

    def fire(self, progress: UnitProgress, trigger: Trigger) -> tuple[UnitState, UnitState]:
        """
        Move ``progress`` by ``trigger``: ``(old state, new state)``.

        Raises:
            TransitionError: When the trigger is not legal from the current state.
            GateNotMet: When it is legal but its gate is not met.
        """
        before = _STATES[progress.state]
        # The transitions of this trigger from this state, run directly: the machine has
        # no prepare, finalize or exception callbacks and no queue, so `Event.trigger`'s
        # layers (a partial, the process loop, their debug logging) would only add cost.
        event = self._machine.events[trigger._value_]
        candidates = event.transitions.get(progress.state)
        if not candidates:
            raise TransitionError(progress.unit.id, before.value, trigger.value)
        data = EventData(
            self._machine.get_state(progress.state), event, self._machine, progress, (), {}
        )
        moved = False
        for transition in candidates:
            data.transition = transition
            if transition.execute(data):
                moved = True
                break
        if not moved:
            gate = self._gates[trigger, before]
            raise GateNotMet(progress.unit.id, before.value, trigger.value, gate)
        return before, _STATES[progress.state]
