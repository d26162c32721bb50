"""The simulated line's PLC program on its own (no field bus): what a PLC restart does to the
parts on the belt, as a real PLC following the contract would do it."""

from __future__ import annotations

import numpy as np

from controller.contract import DispositionCause, Verdict, area_layout
from simulators.line import LineConfig, PlcScan

LAYOUT = area_layout(16)
CFG = LineConfig(
    camera_offsets_mm=(150.0,), spacing_jitter=0.0, defect_rate=0.0, cell_heartbeat_timeout_s=100.0
)
SCAN_S = CFG.scan_s


class Line:
    """A PlcScan on a simulated clock, with a cell that passes every part the PLC announces."""

    def __init__(self) -> None:
        self.plc = np.zeros(1, dtype=LAYOUT.plc_dtype)[0]
        self.cell = np.zeros(1, dtype=LAYOUT.cell_dtype)[0]
        self.scan = PlcScan(CFG, LAYOUT, self.plc, self.cell, lambda trig: None, 0.0)
        self.t = 0.0

    def run(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end:
            self.t += SCAN_S
            hdr = self.cell["header"]
            hdr["heartbeat"] = (int(hdr["heartbeat"]) + 1) & 0xFFFF
            for pid, part in self.scan.by_id.items():
                slot = self.cell["verdicts"][pid % LAYOUT.ring_size]
                slot["part_id"], slot["verdict"], slot["attempt"] = pid, Verdict.PASS, 1
                slot["sensor_count"] = part.sensor_count
            self.scan.step(self.t)


def test_a_restart_stops_the_plc_then_rejects_only_the_parts_it_can_still_reach() -> None:
    line = Line()
    line.run(2.0)
    scan = line.scan
    travel = scan.travel_at(line.t)
    on_belt = {p.truth.part_id: travel - p.travel for p in scan.queue}
    assert any(pos >= scan.reject for pos in on_belt.values()), "a part between reject and confirm"
    assert any(pos < scan.deadline for pos in on_belt.values())
    hdr = line.plc["header"]
    seen = (int(hdr["part_seq"]), int(hdr["heartbeat"]), int(hdr["encoder"]))
    reported = len(scan.outcomes)

    scan.inject("restart")
    # In STOP the PLC scans nothing and its memory is still there to read: the last part
    # it registered is announced to the cell before the memory is cleared.
    line.run(PlcScan.RESTART_STOP_S - 2 * SCAN_S)
    assert (int(hdr["part_seq"]), int(hdr["heartbeat"]), int(hdr["encoder"])) == seen
    line.run(0.1)
    # A cold start: counters from 0, the belt (stopped in STOP) goes on from where it stood.
    assert int(hdr["part_seq"]) <= 3
    assert 0 < int(hdr["encoder"]) <= CFG.counts(100.0) + 20

    gone = {o.part_id: o for o in scan.outcomes[reported : reported + len(on_belt)]}
    assert set(gone) == set(on_belt)
    for pid, pos in on_belt.items():
        o = gone[pid]
        assert o.epoch == 0
        if pos >= scan.reject:  # kicked or passed already, as its accepted verdict said
            assert not o.kicked and not o.restart_reject, (pid, pos, o)
        else:  # the restarted PLC no longer holds its verdict: rejected
            assert o.kicked and o.restart_reject and o.cause == DispositionCause.NO_VERDICT, (pid, pos, o)

    line.run(1.5)
    later = [o for o in scan.outcomes if o.epoch == 1]
    assert later and later[0].part_id == 1 and not any(o.restart_reject for o in later)
    assert all(not o.kicked for o in later), "the cell's PASS verdicts are taken again"
    keys = [(o.epoch, o.part_id) for o in scan.outcomes]
    assert len(keys) == len(set(keys)), "each physical part once, by epoch and id"
    assert all(o.sensor_count for o in scan.outcomes)
