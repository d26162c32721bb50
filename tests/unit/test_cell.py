"""The cell core, driven by PLC snapshots and frames with explicit times: no I/O, no clock."""

from __future__ import annotations

import pytest

from controller.contract import AckStatus, AlarmCode, CommandResult, DispositionCause, Verdict
from controller.core.cell import (
    Alarm,
    CellCore,
    CellPlan,
    DropFrame,
    Infer,
    RecordPart,
    WriteVerdict,
)
from controller.core.counters import Count, FrameFate
from controller.core.packml import Command, State
from controller.core.types import ReasonCode, ViewResult, ViewStatus
from tests.plcimage import WRAP, PlcImage

SPEED = 10_000  # counts per second (1 m/s at 10 counts/mm)
CAMS = ("a", "b")


class Rig:
    """A core plus a PLC image and a belt clock: t seconds ↔ encoder counts."""

    def __init__(self, start_raw: int = 1_000_000) -> None:
        self.plc = PlcImage()
        plan = CellPlan(
            cameras=CAMS,
            camera_offsets={"a": 1500, "b": 2000},
            decision_offset=4000,
            deadline_offset=4500,
            reject_offset=5000,
            confirm_offset=5500,
            match_tolerance=100,
            ack_timeout_s=0.02,
            max_counts_per_s=2 * SPEED,
            min_part_pitch=200,
        )
        self.core = CellCore(plan, self.plc.layout)
        self.core.models_ready()
        self.start_raw = start_raw
        self.t = 0.0
        self.actions: list[object] = []
        self.tokens = 0

    def raw_at(self, t: float) -> int:
        return (self.start_raw + int(t * SPEED)) % WRAP

    def tick(self, dt: float = 0.002) -> list[object]:
        self.t += dt
        self.plc.encoder(self.raw_at(self.t))
        acts = self.core.on_plc_inputs(self.plc.snapshot(), self.t)
        self.actions.extend(acts)
        return list(acts)

    def run_until(self, t_end: float) -> None:
        while self.t < t_end:
            self.tick()

    def execute(self) -> None:
        self.tick()
        for cmd in (Command.RESET, Command.START):
            assert self.core.command(cmd) is None
            self.tick()
        assert self.core.state is State.EXECUTE

    def part_at(self, pid: int, t: float) -> None:
        """Register part `pid` at the sensor at time t (advance the belt first)."""
        self.run_until(t)
        self.plc.add_part(pid, self.raw_at(t))
        self.tick()

    def frame(self, cam: str, t_trigger: float, counter: int = 1) -> object:
        self.tokens += 1  # the owner's name for the frame: a running number
        return self.core.on_frame(cam, t_trigger, counter, self.tokens, self.t)

    def result(self, pid: int, cam: str, *defects: str, status: ViewStatus = ViewStatus.OK) -> list[object]:
        res = ViewResult(cam, status, (0.9 if defects else 0.01,), defects)
        acts = self.core.on_view_result(pid, res, self.t, self.t + 0.001)
        self.actions.extend(acts)
        return list(acts)

    def writes(self) -> list[WriteVerdict]:
        return [a for a in self.actions if isinstance(a, WriteVerdict)]


def inspect_part(rig: Rig, pid: int, t0: float, *defects: str) -> WriteVerdict:
    rig.part_at(pid, t0)
    for cam, off in (("a", 0.15), ("b", 0.2)):
        rig.run_until(t0 + off + 0.004)
        act = rig.frame(cam, t0 + off)
        assert isinstance(act, Infer) and act.part_id == pid
        acts = rig.result(pid, cam, *defects)
    w = acts[-1]
    assert isinstance(w, WriteVerdict)
    rig.core.verdict_written(pid, rig.t)
    return w


def test_part_passes_and_records_after_disposition() -> None:
    rig = Rig()
    rig.execute()
    w = inspect_part(rig, 1, 0.1)
    assert (w.verdict, w.attempt) == (Verdict.PASS, 1)
    rig.plc.ack(1, Verdict.PASS)
    rig.tick()
    assert rig.core.parts[1].ack is AckStatus.ACCEPTED
    rig.plc.dispo(1, kicked=False, removed=False, cause=DispositionCause.PASSED)
    acts = rig.tick()
    rec = [a for a in acts if isinstance(a, RecordPart)]
    assert len(rec) == 1 and rec[0].part.part_id == 1
    assert rec[0].part.expected_kick is False
    assert rig.core.counters[Count.MISROUTE] == 0


def test_defect_in_one_view_fails_the_part() -> None:
    rig = Rig()
    rig.execute()
    w = inspect_part(rig, 1, 0.1, "scratch")
    assert w.verdict is Verdict.FAIL
    assert rig.core.parts[1].reasons == ["a:scratch", "b:scratch"]


def test_rollover_of_the_32_bit_counter_during_a_part() -> None:
    rig = Rig(start_raw=WRAP - 2500)  # wraps 0.25 s in, between the sensor and camera b
    rig.execute()
    w = inspect_part(rig, 1, 0.1)
    assert w.verdict is Verdict.PASS
    assert rig.core.position > WRAP


def test_missing_frame_makes_no_decision_at_the_decision_point() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    rig.run_until(0.26)
    assert isinstance(rig.frame("a", 0.25), Infer)
    rig.result(1, "a")
    rig.run_until(0.1 + 0.41)  # past the decision offset (4000 counts = 0.4 s)
    w = rig.writes()[-1]
    assert (w.part_id, w.verdict, w.reason) == (1, Verdict.NO_DECISION, ReasonCode.MISSING_FRAME)
    assert rig.core.counters.frames_of("b", FrameFate.MISSING) == 1


def test_extra_trigger_is_dropped_and_counted() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    rig.run_until(0.2)
    act = rig.frame("a", 0.19)  # 0.09 s after the sensor: 900 counts, far from the 1500 station
    assert isinstance(act, DropFrame) and act.why == "extra"
    assert rig.core.counters.frames_of("a", FrameFate.EXTRA) == 1


def test_late_frame_for_decided_part() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    rig.run_until(0.55)  # decided NO_DECISION, frames never came
    act = rig.frame("a", 0.25)
    assert isinstance(act, DropFrame) and act.why == "late"


def test_unacknowledged_verdict_is_repeated_until_deadline() -> None:
    rig = Rig()
    rig.execute()
    inspect_part(rig, 1, 0.1)
    t_written = rig.t
    rig.run_until(t_written + 0.025)
    repeats = [w for w in rig.writes() if w.part_id == 1 and w.attempt == 2]
    assert repeats, "a verdict not echoed within ack_timeout must be written again"
    rig.core.verdict_written(1, rig.t)
    rig.plc.ack(1, Verdict.PASS, attempt=2)
    rig.tick()
    assert rig.core.parts[1].ack is AckStatus.ACCEPTED
    n = len(rig.writes())
    rig.run_until(rig.t + 0.1)
    assert len(rig.writes()) == n


def test_no_repeat_after_the_deadline_and_kick_expected() -> None:
    rig = Rig()
    rig.execute()
    inspect_part(rig, 1, 0.1)
    rig.run_until(0.1 + 0.46)  # past the deadline: no more writes
    n = len(rig.writes())
    rig.run_until(0.1 + 0.5)
    assert len(rig.writes()) == n
    rig.plc.dispo(1, kicked=True, removed=True, cause=DispositionCause.NO_VERDICT)
    rec = next(a for a in rig.tick() if isinstance(a, RecordPart))
    assert rec.part.expected_kick is True  # a PASS that never reached the PLC is a reject
    assert rig.core.counters[Count.MISROUTE] == 0


def test_parts_entering_outside_execute_are_rejected_and_recorded() -> None:
    rig = Rig()
    rig.tick()
    rig.part_at(1, 0.05)
    w = rig.writes()[-1]
    assert (w.verdict, w.reason) == (Verdict.NO_DECISION, ReasonCode.NOT_INSPECTING)


def test_kick_mismatch_raises_misroute_alarm() -> None:
    rig = Rig()
    rig.execute()
    inspect_part(rig, 1, 0.1)
    rig.plc.ack(1, Verdict.PASS)
    rig.tick()
    rig.plc.dispo(1, kicked=True, removed=True, cause=DispositionCause.VERDICT_REJECT)
    acts = rig.tick()
    assert any(isinstance(a, Alarm) and a.code == AlarmCode.MISROUTE for a in acts)
    assert rig.core.counters[Count.MISROUTE] == 1


def test_failed_kick_confirmation_raises_alarm() -> None:
    rig = Rig()
    rig.execute()
    inspect_part(rig, 1, 0.1, "spot")
    rig.plc.ack(1, Verdict.FAIL)
    rig.tick()
    rig.plc.dispo(1, kicked=True, removed=False, cause=DispositionCause.VERDICT_REJECT)
    acts = rig.tick()
    assert any(isinstance(a, Alarm) and a.code == AlarmCode.REJECT_NOT_CONFIRMED for a in acts)
    assert rig.core.state is State.HELD  # the recipe says a failed kick stops the line


def test_part_ring_overrun_records_every_unseen_part() -> None:
    rig = Rig()
    rig.execute()
    stalled = rig.t + 0.5  # the cell did not read for 0.5 s: 5,000 counts, room for 25 parts
    for pid in range(1, 21):  # 20 parts between two reads, ring of 16
        rig.plc.add_part(pid, rig.raw_at(stalled))
    acts = rig.tick(0.5)
    overrun = [w for w in acts if isinstance(w, WriteVerdict) and w.reason is ReasonCode.RING_OVERRUN]
    assert [w.part_id for w in overrun] == [1, 2, 3, 4]
    assert set(rig.core.parts) == set(range(1, 21))
    assert AlarmCode.PART_RING_OVERRUN in rig.core.alarms


def test_plc_command_word_is_handled_once_and_acknowledged() -> None:
    rig = Rig()
    rig.tick()  # learns the current sequence
    rig.plc.command(Command.RESET)
    rig.tick()
    assert rig.core.cmd_result is CommandResult.ACCEPTED
    assert rig.core.state is State.IDLE
    rig.tick()  # same sequence: not applied again
    rig.plc.command(Command.UNHOLD)
    rig.tick()
    assert rig.core.cmd_result is CommandResult.REFUSED
    rig.plc.command(77)
    rig.tick()
    assert rig.core.cmd_result is CommandResult.UNKNOWN


def test_stalled_plc_heartbeat_holds_the_cell() -> None:
    rig = Rig()
    rig.execute()
    frozen = rig.plc.snapshot()
    t = rig.t
    for k in range(1, 700):
        rig.core.on_plc_inputs(frozen, t + k * 0.002)
    assert AlarmCode.PLC_HEARTBEAT_LOST in rig.core.alarms
    assert rig.core.state is State.HELD


def test_a_camera_gone_raises_one_alarm_and_the_line_runs_on() -> None:
    rig = Rig()
    rig.execute()
    first = rig.core.cameras_absent(["b"])
    assert [a.code for a in first if isinstance(a, Alarm)] == [AlarmCode.CAMERA_LOST]
    assert rig.core.cameras_absent(["b"]) == []  # still gone: no new alarm record
    assert rig.core.cameras_absent([]) == [] and AlarmCode.CAMERA_LOST in rig.core.alarms
    assert rig.core.state is State.EXECUTE  # the line runs on; parts with its view missing are rejected


def test_flush_gives_every_part_a_record() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    inspect_part(rig, 2, 0.15)
    acts = rig.core.flush(rig.t)
    recs = sorted(a.part.part_id for a in acts if isinstance(a, RecordPart))
    assert recs == [1, 2]
    assert rig.core.in_flight() == 0


def test_stopping_waits_for_undecided_parts() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    assert rig.core.command(Command.STOP) is None
    rig.tick()
    assert rig.core.state is State.STOPPING
    rig.run_until(0.52)
    assert rig.core.state is State.STOPPED


@pytest.mark.parametrize("status", [ViewStatus.FAILED])
def test_failed_view_makes_no_decision(status: ViewStatus) -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    rig.run_until(0.26)
    rig.frame("a", 0.25)
    rig.run_until(0.31)
    rig.frame("b", 0.30)
    rig.result(1, "a")
    acts = rig.core.on_view_result(
        1, ViewResult("b", status, cause=ReasonCode.INFERENCE_FAILED), rig.t, rig.t
    )
    w = acts[-1]
    assert isinstance(w, WriteVerdict)
    assert (w.verdict, w.reason) == (Verdict.NO_DECISION, ReasonCode.INFERENCE_FAILED)


def test_slow_reads_do_not_feed_the_frame_timing_history() -> None:
    rig = Rig()
    rig.execute()
    before = rig.core.history.position_at(rig.t)
    rig.plc.encoder(rig.raw_at(rig.t + 0.05))
    rig.core.on_plc_inputs(rig.plc.snapshot(), rig.t + 0.05, round_trip=0.03)
    assert rig.core.counters[Count.IMPRECISE_ENCODER_SAMPLES] == 1
    assert rig.core.history.position_at(rig.t) == before


def test_uncertain_view_rejects_as_no_decision() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    rig.run_until(0.31)
    rig.frame("a", 0.25)
    rig.frame("b", 0.30)
    rig.result(1, "a")
    res = ViewResult("b", ViewStatus.UNCERTAIN, (0.45,), ("spot",), ReasonCode.UNCERTAIN)
    w = rig.core.on_view_result(1, res, rig.t, rig.t)[-1]
    assert isinstance(w, WriteVerdict) and (w.verdict, w.reason) == (
        Verdict.NO_DECISION,
        ReasonCode.UNCERTAIN,
    )


def _other_plan(rig: Rig) -> CellPlan:
    from dataclasses import replace

    return replace(rig.core.plan, camera_offsets={"a": 1700, "b": 2200}, recipe_name="long", recipe_number=2)


def test_changeover_in_execute_binds_parts_by_boundary() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    new = _other_plan(rig)
    boundary = rig.core.activate(new)
    assert boundary == 3 and rig.core.announced_plan is new
    assert rig.core.recipe_refusal() is not None  # one changeover at a time
    rig.part_at(2, 0.15)
    rig.part_at(3, 0.2)
    assert rig.core.parts[2].plan.recipe_name == "" and rig.core.parts[3].plan is new
    assert rig.core.plan is new and rig.core.recipe_refusal() is None
    # Part 2 is still matched at the old stations, part 3 at the new ones.
    rig.run_until(0.3)
    assert isinstance(rig.frame("a", 0.15 + 0.15), Infer)
    rig.run_until(0.38)
    act = rig.frame("a", 0.2 + 0.17)
    assert isinstance(act, Infer) and act.part_id == 3


def test_changeover_outside_execute_is_immediate_and_unsafe_states_refuse() -> None:
    rig = Rig()
    rig.tick()
    assert rig.core.recipe_refusal() is None  # Stopped is safe
    new = _other_plan(rig)
    rig.core.activate(new)
    assert rig.core.plan is new and not rig.core.changeover_pending
    rig.core.command(Command.RESET)
    assert rig.core.state is State.RESETTING
    assert "not in a safe state" in (rig.core.recipe_refusal() or "")


def test_plc_recipe_request_is_raised_once_and_answered() -> None:
    from controller.contract import RecipeResult
    from controller.core.cell import RecipeRequest

    rig = Rig()
    rig.tick()
    h = rig.plc.area["header"]
    h["recipe_number"], h["recipe_seq"] = 2, 1
    reqs = [a for a in rig.tick() if isinstance(a, RecipeRequest)]
    assert [(r.seq, r.number) for r in reqs] == [(1, 2)]
    assert not [a for a in rig.tick() if isinstance(a, RecipeRequest)]
    rig.core.answer_recipe(1, RecipeResult.ACTIVE)
    assert (rig.core.recipe_ack_seq, rig.core.recipe_result) == (1, RecipeResult.ACTIVE)


def test_stopping_writes_the_last_no_decision_verdicts_before_recording() -> None:
    """Drain timeout: the undecided parts' NO_DECISION still reaches the PLC, and the record
    says when (was: the write dropped, the record with attempts=1 and no write time)."""
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    writes = rig.core.decide_all(rig.t)
    assert [(w.part_id, w.verdict) for w in writes if isinstance(w, WriteVerdict)] == [
        (1, Verdict.NO_DECISION)
    ]
    rig.core.verdict_written(1, rig.t + 0.001)
    (rec,) = [a for a in rig.core.finish_all() if isinstance(a, RecordPart)]
    assert rec.part.attempts == 1 and rec.part.t_first_write == rig.t + 0.001


def test_an_alarm_is_recorded_once_per_episode_with_its_count() -> None:
    """A stall: 30 parts without a disposition give one alarm record, and a count when cleared."""
    rig = Rig()
    rig.execute()
    for pid in range(1, 31):
        rig.part_at(pid, 0.05 * pid)
    rig.run_until(0.05 * 30 + 1.2)  # all far past the confirm sensor, none reported
    raised = [a for a in rig.actions if isinstance(a, Alarm) and a.code == AlarmCode.NO_DISPOSITION]
    assert len(raised) == 1
    assert rig.core.command(Command.HOLD) is None
    rig.tick()
    assert rig.core.command(Command.UNHOLD) is None
    cleared = [a for a in rig.tick() if isinstance(a, Alarm) and a.cleared]
    assert [(a.code, a.occurrences) for a in cleared] == [(AlarmCode.NO_DISPOSITION, 30)]


def test_the_owner_asks_the_core_about_its_parts_through_methods() -> None:
    rig = Rig()
    rig.execute()
    rig.part_at(1, 0.1)
    assert rig.core.is_undecided(1) and rig.core.any_undecided() and not rig.core.is_undecided(2)
    assert rig.core.generation_of(1) == 0 and rig.core.generation_of(2) is None
    assert rig.core.generations_in_use() == {0}
    track = rig.core.track_of(1)
    assert track is not None and track.part_id == 1 and rig.core.track_of(2) is None
    for cam, off in (("a", 0.15), ("b", 0.2)):
        rig.run_until(0.1 + off + 0.004)
        rig.frame(cam, 0.1 + off)
        rig.result(1, cam)
    assert not rig.core.is_undecided(1) and rig.core.generations_in_use() == set()
    assert rig.core.awaiting_acks()  # its verdict handed out, no echo yet
    rig.plc.ack(1, Verdict.PASS)
    rig.tick()
    assert not rig.core.awaiting_acks()
    rig.core.verdict_queue_full()
    assert rig.core.counters[Count.VERDICT_QUEUE_FULL] == 1
    assert not rig.core.alarm_active(AlarmCode.IMAGES_NOT_SAVED)
    rig.core.raise_alarm(AlarmCode.IMAGES_NOT_SAVED, "images not saved")
    assert rig.core.alarm_active(AlarmCode.IMAGES_NOT_SAVED)
