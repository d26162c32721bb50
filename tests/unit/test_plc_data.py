"""PLC data the cell cannot trust: every case ends in an alarm naming it, Held, fail-safe
rejects for the parts in flight, and counters that resynchronise. No PLC data, however
malformed, may raise out of the core."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.contract import AlarmCode, CommandResult, DispositionCause, Verdict
from controller.core.cell import RecipeRequest, RecordPart, WriteVerdict
from controller.core.counters import Count
from controller.core.packml import Command, State
from controller.core.types import ReasonCode
from tests.plcimage import WRAP, PlcImage
from tests.unit.test_cell import Rig, inspect_part


def records(rig: Rig) -> dict[tuple[int, int], RecordPart]:
    return {(a.part.epoch, a.part.part_id): a for a in rig.actions if isinstance(a, RecordPart)}


def in_flight_rig() -> Rig:
    """Execute, one part decided and waiting for its disposition, two parts still undecided."""
    rig = Rig()
    rig.execute()
    inspect_part(rig, 1, 0.1)
    rig.part_at(2, 0.35)
    rig.part_at(3, 0.40)
    assert set(rig.core.undecided) == {2, 3}
    return rig


def assert_failed_safe(rig: Rig, code: AlarmCode, *pids: int) -> None:
    rig.tick()  # Holding completes on the next snapshot
    assert code in rig.core.alarms, rig.core.alarms
    assert rig.core.state is State.HELD
    written = {w.part_id: w for w in rig.writes()}
    for pid in pids:
        assert written[pid].verdict is Verdict.NO_DECISION
        assert written[pid].reason is ReasonCode.PLC_DATA
    assert not rig.core.undecided


@pytest.mark.parametrize("step", [-20_000, -(1 << 31), 1 << 31, 3_000_000])
def test_encoder_jump_alarms_holds_and_rejects_in_flight(step: int) -> None:
    rig = in_flight_rig()
    rig.start_raw = (rig.start_raw + step) % WRAP
    rig.tick()  # must not raise (it did: ValueError in Matcher.expect on every cycle)
    assert_failed_safe(rig, AlarmCode.ENCODER_IMPLAUSIBLE, 2, 3)
    assert "encoder" in rig.core.alarms[AlarmCode.ENCODER_IMPLAUSIBLE]
    # The belt goes on from the new value: parts keep being tracked and recorded.
    rig.part_at(4, rig.t + 0.05)
    assert 4 in rig.core.parts


def test_encoder_back_by_a_little_is_belt_jitter_not_a_fault() -> None:
    rig = in_flight_rig()
    rig.start_raw -= 40  # 4 mm back: vibration, within the match tolerance
    rig.tick()
    assert AlarmCode.ENCODER_IMPLAUSIBLE not in rig.core.alarms
    assert rig.core.state is State.EXECUTE


def test_plc_restart_finishes_every_part_and_tracks_the_new_ids() -> None:
    rig = in_flight_rig()
    rig.plc.restart()
    rig.start_raw = -int(rig.t * 10_000)  # encoder back at 0 too
    rig.tick()
    assert AlarmCode.PLC_RESTARTED not in rig.core.alarms  # a few reads could be a glitch
    rig.run_until(rig.t + 0.25)
    assert_failed_safe(rig, AlarmCode.PLC_RESTARTED, 2, 3)
    recs = records(rig)
    assert {pid for _, pid in recs} == {1, 2, 3}, "every part before the restart has a record"
    assert all(r.part.kicked is None and "plc_restarted" in r.part.alarms for r in recs.values())
    assert rig.core.counters[Count.MISROUTE] == 0
    # New ids start again at 1: tracked in a new epoch, recorded, never confused with the old.
    for pid in (1, 2):
        rig.part_at(pid, rig.t + 0.05)
    rig.run_until(rig.t + 0.1)
    for pid in (1, 2):
        rig.plc.dispo(pid, kicked=True, removed=True, cause=DispositionCause.VERDICT_REJECT)
    rig.tick()
    recs = records(rig)
    assert {(1, 1), (1, 2)} <= set(recs)
    assert recs[(1, 1)].part.verdict is Verdict.NO_DECISION  # Held: not inspected
    assert rig.core.counters[Count.MISROUTE] == 0


def test_a_restarted_plcs_zeroed_request_words_are_no_request(caplog: pytest.LogCaptureFixture) -> None:
    """A PLC at start holds cmd_seq 0 with code 0 (and recipe_seq 0 with number 0): nothing asked."""
    rig = in_flight_rig()
    h = rig.plc.area["header"]
    h["recipe_number"], h["recipe_seq"] = 2, 1  # a recipe request, and a command, before the restart
    rig.plc.command(Command.HOLD)
    rig.run_until(rig.t + 0.01)
    assert rig.core.cmd_result is CommandResult.ACCEPTED
    n = len(rig.actions)
    rig.plc.restart()
    rig.start_raw = -int(rig.t * 10_000)
    rig.run_until(rig.t + 0.3)
    assert AlarmCode.PLC_RESTARTED in rig.core.alarms
    assert "not a PackML command" not in caplog.text
    assert rig.core.cmd_result is not CommandResult.UNKNOWN
    assert not [a for a in rig.actions[n:] if isinstance(a, RecipeRequest)], "no recipe 0 asked for"
    # The restarted PLC numbers its requests from 1 again: its first command is taken.
    rig.plc.command(Command.UNHOLD)
    rig.run_until(rig.t + 0.01)
    assert rig.core.cmd_ack_seq == 1 and rig.core.cmd_result is CommandResult.ACCEPTED
    assert rig.core.state is State.EXECUTE


def test_part_seq_blip_makes_no_phantom_parts_and_the_real_ones_go_on() -> None:
    rig = in_flight_rig()
    h = rig.plc.area["header"]
    h["part_seq"] = 1003
    rig.run_until(rig.t + 0.1)  # 100 ms of a wrong part_seq
    h["part_seq"] = 3
    rig.tick()
    assert_failed_safe(rig, AlarmCode.PART_DATA_INVALID, 2, 3)
    assert "1003" in rig.core.alarms[AlarmCode.PART_DATA_INVALID]
    assert not any(pid > 10 for pid in rig.core.parts), "no phantom parts"
    rig.part_at(4, rig.t + 0.05)
    rig.part_at(5, rig.t + 0.05)
    assert {4, 5} <= set(rig.core.parts)
    assert all(w.verdict is Verdict.NO_DECISION for w in rig.writes() if w.part_id in (4, 5))


def test_a_lasting_part_seq_jump_is_taken_as_the_new_count() -> None:
    rig = in_flight_rig()
    h = rig.plc.area["header"]
    h["part_seq"] = 50_003
    rig.run_until(rig.t + 0.26)
    assert AlarmCode.PART_DATA_INVALID in rig.core.alarms
    rig.part_at(50_004, rig.t + 0.05)
    assert 50_004 in rig.core.parts


@pytest.mark.parametrize("bad_id", [0, 77])
def test_part_slot_that_does_not_hold_its_part_alarms_and_records_it(bad_id: int) -> None:
    rig = in_flight_rig()
    rig.plc.add_part(4, rig.raw_at(rig.t))
    rig.plc.area["parts"][4 % 16]["part_id"] = bad_id
    rig.tick()
    assert_failed_safe(rig, AlarmCode.PART_DATA_INVALID, 2, 3, 4)
    assert f"slot 4 holds part id {bad_id}" in rig.core.alarms[AlarmCode.PART_DATA_INVALID]
    assert 4 in rig.core.parts, "the announced part is tracked (and rejected), never dropped"


def test_disposition_for_an_unknown_part_alarms() -> None:
    rig = in_flight_rig()
    rig.plc.dispo(999, kicked=True, removed=True, cause=DispositionCause.VERDICT_REJECT)
    rig.tick()
    assert_failed_safe(rig, AlarmCode.DISPO_DATA_INVALID, 2, 3)
    assert "999" in rig.core.alarms[AlarmCode.DISPO_DATA_INVALID]


def test_dispositions_for_parts_from_before_the_cell_connected_are_not_faults() -> None:
    rig = Rig()
    rig.plc.add_part(7, rig.raw_at(0.0))  # on the belt before the cell's first read
    rig.execute()
    rig.plc.dispo(7, kicked=True, removed=True, cause=DispositionCause.NO_VERDICT)
    rig.tick()
    assert not rig.core.alarms
    assert rig.core.counters[Count.DISPO_BEFORE_CONNECT] == 1


def test_unhold_after_a_fault_resumes_inspection() -> None:
    rig = in_flight_rig()
    rig.start_raw -= 20_000
    rig.tick()
    rig.tick()
    assert rig.core.state is State.HELD
    assert rig.core.command(Command.UNHOLD) is None
    rig.tick()
    assert rig.core.state is State.EXECUTE and not rig.core.alarms
    w = inspect_part(rig, 4, rig.t + 0.05)
    assert w.verdict is Verdict.PASS


@pytest.mark.parametrize("state_cmds", [(Command.RESET, Command.START)])
def test_heartbeat_lost_while_starting_does_not_raise(state_cmds: tuple[Command, ...]) -> None:
    rig = Rig()
    rig.tick()
    rig.core.models_ready(False)  # stays in Starting
    for cmd in state_cmds:
        assert rig.core.command(cmd) is None
        rig.tick()
    assert rig.core.state is State.STARTING
    hb = int(rig.plc.area["header"]["heartbeat"])
    for _ in range(700):  # 1.4 s of a frozen PLC heartbeat
        rig.plc.area["header"]["heartbeat"] = hb
        rig.tick()
    assert AlarmCode.PLC_HEARTBEAT_LOST in rig.core.alarms
    rig.core.models_ready()
    rig.plc.area["header"]["heartbeat"] = hb + 5
    rig.tick()
    rig.tick()
    assert rig.core.state in (State.HELD, State.HOLDING)


def test_command_code_0_is_unknown() -> None:
    rig = Rig()
    rig.tick()
    rig.plc.command(0)
    rig.tick()
    assert rig.core.cmd_result is CommandResult.UNKNOWN


# ---------------------------------------------------------------------- fuzz
def _snapshots(image: PlcImage) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=image.layout.plc_size, max_size=image.layout.plc_size)


_IMAGE = PlcImage()


@settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
@given(st.lists(_snapshots(_IMAGE), min_size=1, max_size=12), st.sampled_from([0, 3, 12]))
def test_no_plc_data_raises_out_of_the_core(garbage: list[bytes], clean_cycles: int) -> None:
    """Random PLC areas, between and after real traffic: the core never raises, keeps its books."""
    rig = in_flight_rig()
    for blob in garbage:
        rig.t += 0.002
        snap = np.frombuffer(blob, dtype=rig.plc.layout.plc_dtype)[0]
        rig.actions.extend(rig.core.on_plc_inputs(snap, rig.t))
        for _ in range(clean_cycles):
            rig.tick()
    rig.actions.extend(rig.core.flush(rig.t + 1.0))
    recorded = [a.part for a in rig.actions if isinstance(a, RecordPart)]
    keys = [(p.epoch, p.part_id) for p in recorded]
    assert len(keys) == len(set(keys)), "one record per part"
    assert not rig.core.parts and not rig.core.undecided
    passed = [p for p in recorded if p.verdict is Verdict.PASS]
    assert all(p.part_id == 1 for p in passed), "nothing judged under untrusted data passes"
    assert any(isinstance(a, WriteVerdict) for a in rig.actions)


def test_a_lasting_step_back_to_a_large_value_is_a_new_epoch_nothing_overwritten() -> None:
    """part_seq 3 -> 1 and held (ids reused, but not a fresh PLC): the tracked parts are
    recorded, the new ones live in a new epoch (was: adopted in the same epoch, parts replaced)."""
    rig = in_flight_rig()
    h = rig.plc.area["header"]
    h["part_seq"] = 1
    rig.run_until(rig.t + 0.3)
    assert AlarmCode.PLC_RESTARTED in rig.core.alarms
    rig.plc.add_part(2, rig.raw_at(rig.t))
    rig.tick()
    recs = records(rig)
    assert {(0, 1), (0, 2), (0, 3)} <= set(recs)
    assert rig.core.parts[2].epoch == 1


def test_parts_registered_while_a_jump_is_doubted_are_tracked_once_it_lasts() -> None:
    rig = in_flight_rig()
    h = rig.plc.area["header"]
    h["part_seq"] = 1100
    rig.plc.add_part(1100, rig.raw_at(rig.t))
    rig.tick()
    for pid in range(1101, 1105):  # the PLC goes on registering while the cell doubts it
        rig.plc.add_part(pid, rig.raw_at(rig.t))
        rig.run_until(rig.t + 0.07)
    assert set(range(1100, 1105)) <= set(rig.core.parts), sorted(rig.core.parts)


def test_a_disposition_before_the_verdict_is_not_believed() -> None:
    rig = in_flight_rig()
    rig.plc.dispo(2, kicked=True, removed=True, cause=DispositionCause.VERDICT_REJECT)
    rig.tick()
    assert_failed_safe(rig, AlarmCode.DISPO_DATA_INVALID, 2, 3)
    rec = records(rig)[(0, 2)].part
    assert rec.verdict is Verdict.NO_DECISION and rec.attempts == 1


def test_part_ids_wrap_at_2_pow_32_like_the_plc_counter() -> None:
    rig = Rig()
    start = WRAP - 3
    rig.plc.area["header"]["part_seq"] = start - 1
    rig.execute()
    ids = [(start + k) % WRAP for k in range(6)]  # ..., 2^32-1, 0, 1, 2
    for pid in ids:
        rig.plc.add_part(pid, rig.raw_at(rig.t))
        rig.run_until(rig.t + 0.06)
    assert set(ids) <= set(rig.core.parts)
    rig.run_until(rig.t + 0.5)  # past the decision point: every one decided
    for pid in ids:
        rig.plc.ack(pid, Verdict.NO_DECISION)
        rig.plc.dispo(pid, kicked=True, removed=True, cause=DispositionCause.VERDICT_REJECT)
    rig.tick()
    assert {pid for _, pid in records(rig)} >= set(ids)
    assert AlarmCode.DISPO_DATA_INVALID not in rig.core.alarms and rig.core.counters[Count.MISROUTE] == 0


def _stalled_reads(rig: Rig, stall_s: float, first_read_age_s: float, step_s: float) -> None:
    """The cell's reads stall for `stall_s`; the first read after it shows what the PLC
    published `first_read_age_s` earlier, the next one (6 ms later) the belt `step_s` further."""
    rig.t += stall_s
    rig.plc.encoder(rig.raw_at(rig.t - first_read_age_s))
    rig.actions.extend(rig.core.on_plc_inputs(rig.plc.snapshot(), rig.t))
    rig.t += 0.006
    rig.plc.encoder(rig.raw_at(rig.t - first_read_age_s + step_s))
    rig.actions.extend(rig.core.on_plc_inputs(rig.plc.snapshot(), rig.t))


def test_the_belt_moving_while_the_cells_reads_stalled_is_no_encoder_fault() -> None:
    # The value first seen after a stall may have been published any time during it: the step
    # to the next one is bounded by the belt's speed since the read before the stall, not by
    # the 6 ms between the two reads (it raised alarm 14 and held the line on a loaded host).
    rig = in_flight_rig()
    _stalled_reads(rig, stall_s=0.3, first_read_age_s=0.15, step_s=0.156)
    assert AlarmCode.ENCODER_IMPLAUSIBLE not in rig.core.alarms, rig.core.alarms
    assert rig.core.state is State.EXECUTE


def test_a_step_further_than_the_belt_can_move_over_a_stall_is_still_a_fault() -> None:
    rig = in_flight_rig()
    _stalled_reads(rig, stall_s=0.3, first_read_age_s=0.0, step_s=2.0)  # 2 s of belt in 0.3 s
    assert_failed_safe(rig, AlarmCode.ENCODER_IMPLAUSIBLE, 2, 3)
