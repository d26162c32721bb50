"""PLC data the cell cannot trust, injected by the simulated PLC and read over real S7 and Modbus.

The simulated line's PLC program runs scan by scan on a simulated clock; the cell core reads it
through the real link every other scan, answers each trigger with a frame and a passing view,
and writes its header and verdicts back. Each fault must end in its alarm, Held, parts in
flight rejected, the counters resynchronised, and a record for every part the line reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controller.contract import AlarmCode, State, Verdict, area_layout, cell_header_bytes
from controller.core.cell import CellCore, CellPlan, Infer, RecordPart, WriteVerdict
from controller.core.counters import Count
from controller.core.packml import Command
from controller.core.types import ViewResult, ViewStatus
from drivers.modbus_link import ModbusPlcLink
from drivers.s7_link import S7PlcLink
from simulators.line import LineConfig, PlcScan, Trigger
from simulators.modbus_plc import SimModbusPlc
from simulators.s7_plc import SimS7Plc

CFG = LineConfig(
    camera_offsets_mm=(150.0, 200.0),
    parts_per_min=1200.0,
    cell_heartbeat_timeout_s=100.0,
    spacing_jitter=0.0,
    defect_rate=0.0,
)


class Bench:
    """One simulated PLC, the real link to it, and a cell core, on a simulated clock."""

    def __init__(self, protocol: str) -> None:
        ring = 8 if protocol == "modbus" else 16
        self.layout = area_layout(ring)
        self.plc: Any
        self.link: Any
        if protocol == "modbus":
            self.plc = SimModbusPlc(self.layout, 0, 1000)
            self.plc.start()
            self.link = ModbusPlcLink(self.layout, "127.0.0.1", self.plc.port, timeout_s=0.5)
        else:
            self.plc = SimS7Plc(self.layout, 100, 101)
            self.link = S7PlcLink(self.layout, "127.0.0.1", self.plc.start(0), timeout_s=0.5)
        self.link.connect()
        cpm = CFG.counts_per_mm
        plan = CellPlan(
            cameras=("c0", "c1"),
            camera_offsets={"c0": 1500, "c1": 2000},
            decision_offset=4000,
            deadline_offset=4500,
            reject_offset=5000,
            confirm_offset=5500,
            match_tolerance=round(10 * cpm),
            max_counts_per_s=2 * CFG.counts_per_s,
            min_part_pitch=round(20 * cpm),
        )
        self.core = CellCore(plan, self.layout)
        self.core.models_ready()
        self.t = 0.0
        self.triggers: list[Trigger] = []
        self.scan = PlcScan(
            CFG, self.layout, self.plc.plc_area, self.plc.cell_area, self.triggers.append, 0.0
        )
        self.records: list[RecordPart] = []
        self.verdicts: list[WriteVerdict] = []
        self.counter = 0
        self.heartbeat = 0

    def close(self) -> None:
        self.link.close()
        self.plc.stop()

    def run(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end:
            self.t += 0.001
            with self.plc.locked():
                self.scan.step(self.t)
            if round(self.t * 1000) % 2:
                continue  # the cell reads every other scan
            self._execute(self.core.on_plc_inputs(self.link.read_inputs(), self.t))
            for trig in self.triggers:  # each trigger's frame, inspected and good
                self.counter += 1
                act = self.core.on_frame(f"c{trig.camera}", trig.t, self.counter, self.counter, self.t)
                if isinstance(act, Infer):
                    res = ViewResult(act.camera, ViewStatus.OK, (0.01,))
                    self._execute(self.core.on_view_result(act.part_id, res, self.t, self.t))
            self.triggers.clear()
            self.heartbeat += 1
            self.link.write_header(cell_header_bytes(heartbeat=self.heartbeat, **self.core.header_fields()))

    def _execute(self, actions: list[object]) -> None:
        for a in actions:
            if isinstance(a, WriteVerdict):
                self.verdicts.append(a)
                self.link.write_verdict(a.part_id, a.verdict, int(a.reason), a.attempt, a.sensor_count)
                self.core.verdict_written(a.part_id, self.t)
            elif isinstance(a, RecordPart):
                self.records.append(a)

    def command(self, cmd: Command) -> None:
        assert self.core.command(cmd) is None
        self.run(0.004)


@pytest.fixture(params=["s7", "modbus"])
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    b = Bench(request.param)
    b.run(0.01)
    b.command(Command.RESET)
    b.command(Command.START)
    assert b.core.state is State.EXECUTE
    b.run(0.6)  # parts on the belt at every station
    assert b.core.undecided and any(r.part.verdict is Verdict.PASS for r in b.records)
    yield b
    b.close()


FAULTS = [
    ("encoder_step", -20_000, AlarmCode.ENCODER_IMPLAUSIBLE),
    ("encoder_step", 1 << 31, AlarmCode.ENCODER_IMPLAUSIBLE),
    ("restart", 0, AlarmCode.PLC_RESTARTED),
    ("part_seq_glitch", 1000, AlarmCode.PART_DATA_INVALID),
    ("bad_part_slot", 0, AlarmCode.PART_DATA_INVALID),
    ("unknown_disposition", 99_999, AlarmCode.DISPO_DATA_INVALID),
]


@pytest.mark.parametrize(("fault", "value", "code"), FAULTS, ids=[f"{f}-{v}" for f, v, _ in FAULTS])
def test_untrusted_plc_data_holds_rejects_and_resynchronises(
    bench: Bench, fault: str, value: int, code: AlarmCode
) -> None:
    in_flight = set(bench.core.undecided)
    bench.scan.inject(fault, value)
    # A restart is STOP, then a cold start; it is believed once the new counts have held for 0.25 s.
    bench.run(0.3 + (PlcScan.RESTART_STOP_S if fault == "restart" else 0.0))
    core = bench.core
    assert code in core.alarms, core.alarms
    assert core.state is State.HELD
    rejected = {v.part_id for v in bench.verdicts if v.verdict is Verdict.NO_DECISION}
    assert in_flight <= rejected, "parts in flight are rejected fail-safe"
    # The operator unholds: inspection resumes on the resynchronised counters.
    bench.command(Command.UNHOLD)
    assert core.state is State.EXECUTE and not core.alarms
    bench.run(1.5)
    assert not core.alarms, core.alarms
    late = [r.part for r in bench.records if r.part.t_registered > bench.t - 1.0]
    assert any(p.verdict is Verdict.PASS for p in late), "parts pass again after the resync"
    # Every part the line reported has exactly one record; none was misrouted.
    reported = {(o.epoch, o.part_id) for o in bench.scan.outcomes}
    recorded = [(r.part.epoch, r.part.part_id) for r in bench.records]
    assert len(recorded) == len(set(recorded))
    assert reported <= set(recorded) | {(0, value)}, sorted(reported - set(recorded))
    assert core.counters[Count.MISROUTE] == 0
