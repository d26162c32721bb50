from __future__ import annotations

import pytest

from controller.core.packml import (
    ACTING,
    TRANSITIONS,
    CellStateMachine,
    Command,
    CommandRefused,
    State,
    StateChanged,
)

# Shortest command paths from Stopped to every state, completing acting states on the way.
PATHS: dict[State, list[str]] = {
    State.STOPPED: [],
    State.RESETTING: ["reset"],
    State.IDLE: ["reset", "sc"],
    State.STARTING: ["reset", "sc", "start"],
    State.EXECUTE: ["reset", "sc", "start", "sc"],
    State.HOLDING: ["reset", "sc", "start", "sc", "hold"],
    State.HELD: ["reset", "sc", "start", "sc", "hold", "sc"],
    State.UNHOLDING: ["reset", "sc", "start", "sc", "hold", "sc", "unhold"],
    State.SUSPENDING: ["reset", "sc", "start", "sc", "suspend"],
    State.SUSPENDED: ["reset", "sc", "start", "sc", "suspend", "sc"],
    State.UNSUSPENDING: ["reset", "sc", "start", "sc", "suspend", "sc", "unsuspend"],
    State.COMPLETING: ["reset", "sc", "start", "sc", "complete"],
    State.COMPLETE: ["reset", "sc", "start", "sc", "complete", "sc"],
    State.STOPPING: ["reset", "sc", "stop"],
    State.ABORTING: ["abort"],
    State.ABORTED: ["abort", "sc"],
    State.CLEARING: ["abort", "sc", "clear"],
}


def drive(sm: CellStateMachine, path: list[str]) -> None:
    for step in path:
        if step == "sc":
            assert sm.complete_acting()
        else:
            sm.command(Command[step.upper()])


def expected_after(source: State, trigger: str) -> State | None:
    for trig, sources, dest in TRANSITIONS:
        if trig == trigger and source in sources:
            return dest
    return None


@pytest.mark.parametrize("source", list(PATHS))
@pytest.mark.parametrize("cmd", [c for c in Command if c is not Command.UNDEFINED])
def test_every_command_in_every_state(source: State, cmd: Command) -> None:
    """Each command either moves to the state the table says, or is refused with a reason."""
    sm = CellStateMachine()
    drive(sm, PATHS[source])
    assert sm.state is source
    dest = expected_after(source, cmd.name.lower())
    if dest is None:
        with pytest.raises(CommandRefused, match=f"not allowed in {source.name}"):
            sm.command(cmd)
        assert sm.state is source
    else:
        sm.command(cmd)
        assert sm.state is dest


@pytest.mark.parametrize("source", list(PATHS))
def test_state_complete_only_leaves_acting_states(source: State) -> None:
    sm = CellStateMachine()
    drive(sm, PATHS[source])
    left = sm.complete_acting()
    assert left == (source in ACTING)
    if left:
        assert sm.state is expected_after(source, "state_complete")


def test_change_hook_sees_every_transition() -> None:
    seen: list[StateChanged] = []
    sm = CellStateMachine(on_change=seen.append)
    drive(sm, PATHS[State.EXECUTE])
    assert [(c.from_state, c.to_state, c.trigger) for c in seen] == [
        (State.STOPPED, State.RESETTING, "reset"),
        (State.RESETTING, State.IDLE, "state_complete"),
        (State.IDLE, State.STARTING, "start"),
        (State.STARTING, State.EXECUTE, "state_complete"),
    ]


def test_change_hook_is_told_the_cause() -> None:
    seen: list[StateChanged] = []
    sm = CellStateMachine(on_change=seen.append)
    sm.command(Command.ABORT, cause="operator")
    sm.complete_acting(cause="done")
    assert seen == [
        StateChanged(State.STOPPED, State.ABORTING, "abort", "operator"),
        StateChanged(State.ABORTING, State.ABORTED, "state_complete", "done"),
    ]


def test_a_refused_command_calls_no_hook() -> None:
    seen: list[StateChanged] = []
    sm = CellStateMachine(on_change=seen.append)
    with pytest.raises(CommandRefused):
        sm.command(Command.START)
    assert not sm.complete_acting()
    assert seen == []


def test_wire_values_are_packml() -> None:
    assert (State.CLEARING, State.EXECUTE, State.COMPLETE) == (1, 6, 17)
    assert (Command.RESET, Command.START, Command.ABORT, Command.CLEAR) == (1, 2, 8, 9)
