"""The Modbus TCP link against the Modbus PLC simulator: real Modbus traffic on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from controller.contract import AckStatus, Verdict, area_layout
from drivers.modbus_link import ModbusPlcLink
from drivers.s7_link import PlcLinkError
from simulators.line import LineConfig, PlcScan
from simulators.modbus_plc import SimModbusPlc, free_port

LAYOUT = area_layout(8)


@pytest.fixture
def plc() -> Iterator[SimModbusPlc]:
    p = SimModbusPlc(LAYOUT, 0, 1000)
    p.start()
    yield p
    p.stop()


@pytest.fixture
def link(plc: SimModbusPlc) -> Iterator[ModbusPlcLink]:
    lk = ModbusPlcLink(LAYOUT, "127.0.0.1", plc.port, plc_address=0, cell_address=1000, timeout_s=0.5)
    lk.connect()
    yield lk
    lk.close()


def test_whole_input_area_in_one_read_and_slots_in_place(plc: SimModbusPlc, link: ModbusPlcLink) -> None:
    assert LAYOUT.plc_size // 2 <= 125
    with plc.locked():
        plc.plc_area["header"]["encoder"] = 0xFFFFFFF0
        plc.plc_area["dispos"][7]["part_id"] = 99
    snap = link.read_inputs()
    assert int(snap["header"]["encoder"]) == 0xFFFFFFF0 and int(snap["dispos"][7]["part_id"]) == 99
    link.write_verdict(13, Verdict.FAIL, 101, 3, 0x1234)
    v = plc.cell_area["verdicts"][13 % 8]
    assert (int(v["part_id"]), int(v["verdict"]), int(v["attempt"]), int(v["reason"])) == (13, 2, 3, 101)


def test_the_plc_area_is_not_writable_by_the_cell(plc: SimModbusPlc, link: ModbusPlcLink) -> None:
    client = link._require()
    rr = client.write_registers(0, [1, 2], device_id=1)
    assert rr.isError()


def test_scan_acks_verdicts_over_modbus(plc: SimModbusPlc, link: ModbusPlcLink) -> None:
    cfg = LineConfig(parts=1, parts_per_min=600, cell_heartbeat_timeout_s=100.0)
    t = t0 = time.monotonic()
    scan = PlcScan(cfg, LAYOUT, plc.plc_area, plc.cell_area, lambda trig: None, t0)
    while scan.registered < 1:
        t += 0.001
        with plc.locked():
            scan.step(t)
    link.write_verdict(1, Verdict.PASS, 0, 1, scan.sensor_count(1))
    with plc.locked():
        scan.step(t + 0.001)
    assert int(link.read_inputs()["acks"][1]["status"]) == AckStatus.ACCEPTED
    with plc.locked():
        scan.step(t + 1.0)
    assert scan.outcomes[0].kicked is False


def test_dead_server_fails_fast_and_big_rings_are_refused() -> None:
    lk = ModbusPlcLink(LAYOUT, "127.0.0.1", free_port(), timeout_s=0.3)
    t = time.monotonic()
    with pytest.raises(PlcLinkError, match="cannot connect"):
        lk.connect()
    assert time.monotonic() - t < 3.0
    with pytest.raises(ValueError, match="125 registers"):
        ModbusPlcLink(area_layout(16), "127.0.0.1", 502)
