"""The core hands out one StateChanged per PackML transition, with what moved it and why."""

from __future__ import annotations

from controller.contract import AlarmCode, DispositionCause
from controller.core.cell import Alarm
from controller.core.packml import Command, State, StateChanged
from tests.unit.test_cell import Rig, inspect_part

S = State


def changes(actions: list[object]) -> list[tuple[State, State, str, str]]:
    return [(a.from_state, a.to_state, a.trigger, a.cause) for a in actions if isinstance(a, StateChanged)]


def test_owner_commands_each_give_one_change_with_their_cause() -> None:
    rig = Rig()
    rig.tick()
    assert rig.core.command(Command.RESET, cause="api") is None
    # Taken right away (no PLC cycle needed), so not again with the next cycle.
    assert changes(rig.core.take_outbox()) == [(S.STOPPED, S.RESETTING, "reset", "api")]
    assert changes(rig.tick()) == [(S.RESETTING, S.IDLE, "state_complete", "")]
    assert rig.core.command(Command.START) is None
    assert changes(rig.tick()) == [
        (S.IDLE, S.STARTING, "start", ""),
        (S.STARTING, S.EXECUTE, "state_complete", ""),
    ]
    assert changes(rig.tick()) == []


def test_a_refused_command_changes_nothing() -> None:
    rig = Rig()
    rig.tick()
    assert rig.core.command(Command.START) is not None
    assert changes(rig.core.take_outbox()) == []


def test_plc_commands_say_plc() -> None:
    rig = Rig()
    rig.tick()
    rig.plc.command(int(Command.RESET))
    assert changes(rig.tick()) == [
        (S.STOPPED, S.RESETTING, "reset", "plc"),
        (S.RESETTING, S.IDLE, "state_complete", ""),
    ]


def test_execute_path_gives_every_change_once_in_order() -> None:
    rig = Rig()
    rig.execute()
    assert [(a, b) for a, b, *_ in changes(rig.actions)] == [
        (S.STOPPED, S.RESETTING), (S.RESETTING, S.IDLE), (S.IDLE, S.STARTING), (S.STARTING, S.EXECUTE),
    ]  # fmt: skip


def test_a_hold_from_an_alarm_names_the_alarm() -> None:
    rig = Rig()
    rig.execute()
    rig.actions.clear()
    frozen = rig.plc.snapshot()
    acts: list[object] = []
    for k in range(1, 700):  # 1.4 s of a frozen PLC heartbeat
        acts += rig.core.on_plc_inputs(frozen, rig.t + k * 0.002)
    assert changes(acts) == [
        (S.EXECUTE, S.HOLDING, "hold", "alarm PLC_HEARTBEAT_LOST"),
        (S.HOLDING, S.HELD, "state_complete", ""),
    ]
    # The alarm comes before the hold it caused.
    kinds = [type(a) for a in acts if isinstance(a, (Alarm, StateChanged))]
    assert kinds == [Alarm, StateChanged, StateChanged]


def test_link_lost_hands_out_its_hold_at_once() -> None:
    rig = Rig()
    rig.execute()
    acts = rig.core.link_lost("connection reset")
    assert changes(acts) == [
        (S.EXECUTE, S.HOLDING, "hold", "alarm PLC_LINK_LOST"),
        (S.HOLDING, S.HELD, "state_complete", "alarm PLC_LINK_LOST"),
    ]
    assert changes(rig.tick()) == []
    assert changes(rig.core.link_lost("still gone")) == []  # already Held: no change, none told


def test_link_lost_while_stopped_changes_nothing() -> None:
    rig = Rig()
    rig.tick()
    assert changes(rig.core.link_lost("connection refused")) == []
    assert rig.core.state is S.STOPPED


def test_a_fault_the_owner_caught_hands_out_its_hold() -> None:
    rig = Rig()
    rig.execute()
    acts = rig.core.fault(AlarmCode.RECORDS_FAILING, "disk gone", rig.t)
    assert changes(acts) == [(S.EXECUTE, S.HOLDING, "hold", "alarm RECORDS_FAILING")]
    assert changes(rig.tick()) == [(S.HOLDING, S.HELD, "state_complete", "")]


def test_a_hold_while_starting_waits_for_execute_and_keeps_its_cause() -> None:
    rig = Rig()
    rig.tick()
    rig.core.models_ready(False)
    for cmd in (Command.RESET, Command.START):
        assert rig.core.command(cmd) is None
        rig.tick()
    rig.actions.clear()
    assert changes(rig.core.fault(AlarmCode.RECORDS_FAILING, "disk gone", rig.t)) == []
    rig.core.models_ready()
    assert changes(rig.tick()) == [
        (S.STARTING, S.EXECUTE, "state_complete", ""),
        (S.EXECUTE, S.HOLDING, "hold", "alarm RECORDS_FAILING"),
    ]


def test_an_unconfirmed_kick_holds_with_its_alarm() -> None:
    rig = Rig()
    rig.execute()
    inspect_part(rig, 1, 0.1, "scratch")
    rig.actions.clear()
    rig.plc.dispo(1, kicked=True, removed=False, cause=DispositionCause.VERDICT_REJECT)
    assert changes(rig.tick()) == [
        (S.EXECUTE, S.HOLDING, "hold", "alarm REJECT_NOT_CONFIRMED"),
        (S.HOLDING, S.HELD, "state_complete", ""),
    ]


def test_stop_waits_for_undecided_parts_then_changes_once() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    rig.actions.clear()
    assert rig.core.command(Command.STOP) is None
    rig.run_until(0.52)
    assert rig.core.state is S.STOPPED
    assert changes(rig.actions) == [
        (S.EXECUTE, S.STOPPING, "stop", ""),
        (S.STOPPING, S.STOPPED, "state_complete", ""),
    ]


def test_abort_and_clear_each_change_once() -> None:
    rig = Rig()
    rig.execute()
    rig.actions.clear()
    assert rig.core.command(Command.ABORT) is None
    rig.tick()
    assert rig.core.command(Command.CLEAR) is None
    rig.tick()
    rig.tick()
    assert changes(rig.actions) == [
        (S.EXECUTE, S.ABORTING, "abort", ""),
        (S.ABORTING, S.ABORTED, "state_complete", ""),
        (S.ABORTED, S.CLEARING, "clear", ""),
        (S.CLEARING, S.STOPPED, "state_complete", ""),
    ]


def test_reset_hands_out_the_change_before_the_cleared_alarms() -> None:
    rig = Rig()
    rig.execute()
    rig.core.link_lost("gone")
    rig.actions.clear()
    assert rig.core.command(Command.RESET) is not None  # Held: reset is not allowed
    assert rig.core.command(Command.UNHOLD) is None
    kinds = [(type(a).__name__, getattr(a, "cleared", None)) for a in rig.core.take_outbox()]
    assert kinds == [("StateChanged", None), ("Alarm", True)]


def test_flush_and_finish_hand_out_pending_changes() -> None:
    rig = Rig()
    rig.execute()
    rig.actions.clear()
    assert rig.core.command(Command.STOP) is None
    assert changes(rig.core.flush(rig.t)) == [(S.EXECUTE, S.STOPPING, "stop", "")]
