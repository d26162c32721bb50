"""The S7 link against the S7 PLC simulator: real S7 traffic on 127.0.0.1, port picked free."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from controller.contract import AckStatus, Verdict, area_layout
from drivers.s7_link import PlcLinkError, S7PlcLink
from simulators.line import LineConfig, PlcScan, Trigger
from simulators.s7_plc import SimS7Plc

LAYOUT = area_layout(16)


@pytest.fixture
def plc() -> Iterator[SimS7Plc]:
    p = SimS7Plc(LAYOUT, 100, 101)
    p.start(0)
    yield p
    p.stop()


@pytest.fixture
def link(plc: SimS7Plc) -> Iterator[S7PlcLink]:
    lk = S7PlcLink(LAYOUT, "127.0.0.1", plc.port, timeout_s=0.5)
    lk.connect()
    yield lk
    lk.close()


def test_read_whole_input_area_in_one_request(plc: SimS7Plc, link: S7PlcLink) -> None:
    with plc.locked():
        plc.plc_area["header"]["encoder"] = 0xFFFFFFF0
        plc.plc_area["parts"][3]["part_id"] = 3
    snap = link.read_inputs()
    assert int(snap["header"]["encoder"]) == 0xFFFFFFF0
    assert int(snap["parts"][3]["part_id"]) == 3


def test_verdict_write_lands_in_its_slot_and_header_in_its_bytes(plc: SimS7Plc, link: S7PlcLink) -> None:
    link.write_verdict(21, Verdict.FAIL, 101, 3, 0x1234)
    link.write_header(bytes(range(16)))
    v = plc.cell_area["verdicts"][21 % 16]
    assert (int(v["part_id"]), int(v["verdict"]), int(v["attempt"]), int(v["reason"])) == (21, 2, 3, 101)
    assert int(v["sensor_count"]) == 0x1234
    assert int(plc.cell_area["header"]["state"]) == 0x0203
    assert int(plc.cell_area["verdicts"][4]["part_id"]) == 0  # neighbours untouched


def test_scan_echoes_accepted_verdicts_and_flags_late_ones(plc: SimS7Plc, link: S7PlcLink) -> None:
    triggers: list[Trigger] = []
    cfg = LineConfig(parts=2, parts_per_min=600, cell_heartbeat_timeout_s=100.0)
    t0 = time.monotonic()
    scan = PlcScan(cfg, LAYOUT, plc.plc_area, plc.cell_area, triggers.append, t0)
    t = t0
    while scan.registered < 1:
        t += 0.001
        with plc.locked():
            scan.step(t)
    link.write_verdict(1, Verdict.PASS, 0, 1, scan.sensor_count(1))
    with plc.locked():
        scan.step(t + 0.001)
    ack = link.read_inputs()["acks"][1]
    assert (int(ack["part_id"]), int(ack["status"])) == (1, AckStatus.ACCEPTED)
    # Part 2 gets its verdict after the deadline: refused as late, rejected at the station.
    while scan.registered < 2:
        t += 0.001
        with plc.locked():
            scan.step(t)
    t += cfg.deadline_mm / cfg.belt_speed_mm_s + 0.01
    with plc.locked():
        scan.step(t)
    link.write_verdict(2, Verdict.PASS, 0, 1, scan.sensor_count(2))
    with plc.locked():
        scan.step(t + 0.001)
    assert int(link.read_inputs()["acks"][2]["status"]) == AckStatus.LATE
    with plc.locked():
        scan.step(t + 1.0)
    outcome = {o.part_id: o for o in scan.outcomes}
    assert outcome[1].kicked is False and outcome[2].kicked is True
    assert len(triggers) == 2 * len(cfg.camera_offsets_mm)


def test_dead_server_fails_fast_with_a_clear_error() -> None:
    p = SimS7Plc(LAYOUT, 100, 101)
    port = p.start(0)
    p.stop()
    lk = S7PlcLink(LAYOUT, "127.0.0.1", port, timeout_s=0.3)
    t = time.monotonic()
    with pytest.raises(PlcLinkError, match="cannot connect"):
        lk.connect()
    assert time.monotonic() - t < 3.0


def test_scan_rejects_everything_while_the_cell_heartbeat_is_lost(plc: SimS7Plc, link: S7PlcLink) -> None:
    cfg = LineConfig(parts=1, parts_per_min=600, cell_heartbeat_timeout_s=0.05)
    t0 = time.monotonic()
    scan = PlcScan(cfg, LAYOUT, plc.plc_area, plc.cell_area, lambda trig: None, t0)
    t = t0
    while scan.registered < 1:
        t += 0.001
        with plc.locked():
            scan.step(t)
    link.write_verdict(1, Verdict.PASS, 0, 1, scan.sensor_count(1))  # accepted, but the cell then goes silent
    with plc.locked():
        scan.step(t + 0.001)
        scan.step(t + 1.0)
    (o,) = scan.outcomes
    assert o.kicked and o.cause == 3  # DispositionCause.CELL_HEARTBEAT_LOST
