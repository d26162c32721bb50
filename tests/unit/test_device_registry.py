"""The driver registry: one entry per PLC protocol and camera driver, discriminated config models
that say which fields belong to which, and the simulators keyed by the same protocol names."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import pytest

from controller.config import (
    CameraConfig,
    ConfigError,
    ModbusConfig,
    PlcConfig,
    Recipe,
    S7Config,
    SocketCameraConfig,
    load_cell_config,
    load_recipe,
    variants,
)
from controller.devices import CAMERA_DRIVERS, PLC_DRIVERS, make_camera, make_cameras, make_link
from controller.interfaces import CameraError

ROOT = Path(__file__).resolve().parents[2]
S7_CELL = (ROOT / "recipes/cells/demo-cell.yaml").read_text()
MODBUS_CELL = (ROOT / "recipes/cells/demo-cell-modbus.yaml").read_text()


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_cell_config(path)
    return [str(p).removeprefix(f"{path}:") for p in exc.value.problems]


def test_every_config_variant_has_one_driver_and_every_protocol_a_simulated_plc() -> None:
    from simulators.launcher import SIM_PLCS

    plc, cam = variants(PlcConfig), variants(CameraConfig)
    assert plc is not None and cam is not None
    assert {k: d.config for k, d in PLC_DRIVERS.items()} == plc.models
    assert {k: d.config for k, d in CAMERA_DRIVERS.items()} == cam.models
    assert set(SIM_PLCS) == set(PLC_DRIVERS)
    for d in PLC_DRIVERS.values():
        assert callable(import_module(d.module).make_link)
    for d in CAMERA_DRIVERS.values():
        assert callable(import_module(d.module).make_camera)
    for module in SIM_PLCS.values():
        assert callable(import_module(module).make_plc)


def test_the_protocol_picks_the_link_and_its_fields(tmp_path: Path) -> None:
    from drivers.modbus_link import ModbusPlcLink
    from drivers.s7_link import S7PlcLink

    s7 = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    link = make_link(s7)
    assert isinstance(link, S7PlcLink) and (link.db_plc, link.db_cell, link.db_trig) == (100, 101, 102)
    modbus = load_cell_config(ROOT / "recipes/cells/demo-cell-modbus.yaml")
    mlink = make_link(modbus)
    assert isinstance(mlink, ModbusPlcLink) and (mlink.port, mlink.cell_address, mlink.trig_address) == (
        502,
        1000,
        500,
    )
    # Without `protocol` a config is S7, as before; a Modbus one has Modbus's port and ring.
    path = tmp_path / "cell.yaml"
    path.write_text(S7_CELL.replace("  protocol: s7\n", ""))
    assert isinstance(load_cell_config(path).plc, S7Config)
    m = ModbusConfig(protocol="modbus")
    assert (m.port, m.ring_size, m.areas()) == (502, 8, "registers 0 in, 1000 out, unit 1")
    assert S7Config().areas() == "DB100 in, DB101 out"


def test_a_field_of_another_protocol_is_named_in_one_line(tmp_path: Path) -> None:
    s7 = problems(tmp_path, S7_CELL.replace("  rack: 0\n", "  rack: 0\n  device_id: 3\n"))
    assert s7 == [
        "23: plc.device_id: expected a key of protocol s7 (device_id is for protocol modbus), "
        "found unknown key 'device_id'"
    ]
    mb = problems(tmp_path, MODBUS_CELL.replace("  device_id: 1\n", "  device_id: 1\n  db_plc: 100\n"))
    assert mb == [
        "24: plc.db_plc: expected a key of protocol modbus (db_plc is for protocol s7), "
        "found unknown key 'db_plc'"
    ]
    assert problems(tmp_path, S7_CELL.replace("protocol: s7", "protocol: profinet")) == [
        "19: plc.protocol: expected one of 's7', 'modbus', found 'profinet'"
    ]
    assert problems(tmp_path, S7_CELL.replace("  rack: 0\n", "  rakc: 0\n")) == [
        "22: plc.rakc: expected a known key (did you mean 'rack'?), found unknown key 'rakc'"
    ]
    assert problems(tmp_path, S7_CELL.replace("rack: 0", "rack: 9")) == [
        "22: plc.rack: expected at most 7, found 9"
    ]


def test_a_field_of_another_camera_driver_is_named_in_one_line(tmp_path: Path) -> None:
    top = '{name: top,   driver: socket, serial: "SIM-0",'
    assert problems(tmp_path, S7_CELL.replace(top, top + " pixel_format: RGB8,")) == [
        "14: cameras.0.pixel_format: expected a key of driver socket (pixel_format is for driver pylon), "
        "found unknown key 'pixel_format'"
    ]
    pylon = '{name: top,   driver: pylon, serial: "0815",'
    assert problems(tmp_path, S7_CELL.replace(top, pylon + " address: /run/cam.sock,")) == [
        "14: cameras.0.address: expected a key of driver pylon (address is for driver socket), "
        "found unknown key 'address'"
    ]
    assert problems(tmp_path, S7_CELL.replace(top, '{name: top,   driver: gige, serial: "x",')) == [
        "14: cameras.0.driver: expected one of 'pylon', 'socket', found 'gige'"
    ]
    # `sim`, the socket driver's older name, still loads.
    path = tmp_path / "cell.yaml"
    path.write_text(S7_CELL.replace("driver: socket", "driver: sim"))
    assert all(isinstance(c, SocketCameraConfig) for c in load_cell_config(path).cameras)


def test_socket_cameras_open_by_address_and_refuse_none() -> None:
    from drivers.socket_camera import SocketCamera

    cell = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    top = cell.cameras[0]
    with pytest.raises(CameraError, match="camera top: a socket camera needs the address"):
        make_cameras(cell, _recipe())
    cam = make_camera(top.model_copy(update={"address": "/nonexistent/cam.sock"}), _recipe())
    assert isinstance(cam, SocketCamera) and cam.address == "/nonexistent/cam.sock"
    cam.stop()  # never started: nothing to join


def test_the_simulated_plc_matches_the_protocol() -> None:
    from simulators.launcher import make_sim_plc
    from simulators.modbus_plc import SimModbusPlc
    from simulators.s7_plc import SimS7Plc

    s7 = make_sim_plc(S7Config(db_plc=7))
    assert isinstance(s7, SimS7Plc) and s7.db_plc == 7
    mb = make_sim_plc(ModbusConfig(protocol="modbus", cell_register=2000))
    assert isinstance(mb, SimModbusPlc) and mb.cell_address == 2000


def _recipe() -> Recipe:
    return load_recipe(ROOT / "recipes/plate-4h.yaml")
