"""The driver registry: which driver opens each PLC protocol and camera a cell config names.

A driver is its config model (in `controller.config`, a variant of `PlcConfig` or
`CameraConfig`) and its module, imported only when a cell uses it (so a cell without Basler
cameras never loads pylon). A PLC driver module has `make_link(config, layout) -> PlcLink`; a
camera driver module has `make_camera(config, settings) -> Camera` (opened, ready to start).
A new protocol is a driver module, its config model and one line here; `simulators.launcher`
keys the simulated PLCs by the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol, cast

from pydantic import BaseModel

from controller.config import (
    CameraConfig,
    CameraSettings,
    CellConfig,
    ModbusConfig,
    PylonCameraConfig,
    Recipe,
    S7Config,
    SocketCameraConfig,
)
from controller.contract import AreaLayout, area_layout
from controller.interfaces import Camera, CameraError, PlcLink


@dataclass(frozen=True)
class Driver:
    """One driver: the config model it takes and the module that implements it."""

    config: type[BaseModel]
    module: str


#: PLC protocols, by the name `plc.protocol` gives.
PLC_DRIVERS: dict[str, Driver] = {
    "s7": Driver(S7Config, "drivers.s7_link"),
    "modbus": Driver(ModbusConfig, "drivers.modbus_link"),
}

#: Camera drivers, by the name `cameras[].driver` gives (`sim` is socket's older name).
CAMERA_DRIVERS: dict[str, Driver] = {
    "pylon": Driver(PylonCameraConfig, "drivers.pylon_camera"),
    "socket": Driver(SocketCameraConfig, "drivers.socket_camera"),
}


class _LinkMaker(Protocol):
    def __call__(self, config: Any, layout: AreaLayout) -> PlcLink: ...


class _CameraMaker(Protocol):
    def __call__(self, config: Any, settings: CameraSettings) -> Camera: ...


def driver_for(config: BaseModel, registry: dict[str, Driver]) -> Driver:
    """The driver of a PLC or camera config (by its model, so aliases need no entry)."""
    for driver in registry.values():
        if type(config) is driver.config:
            return driver
    raise LookupError(f"no driver registered for {type(config).__name__}")


def make_link(cell: CellConfig) -> PlcLink:
    """The PLC link the cell config names (not connected yet)."""
    driver = driver_for(cell.plc, PLC_DRIVERS)
    maker = cast(_LinkMaker, import_module(driver.module).make_link)
    return maker(cell.plc, area_layout(cell.plc.ring_size))


def make_camera(config: CameraConfig, recipe: Recipe) -> Camera:
    """One camera, opened: hardware from the cell config, exposure and gain from the recipe.
    Raises CameraError."""
    driver = driver_for(config, CAMERA_DRIVERS)
    maker = cast(_CameraMaker, import_module(driver.module).make_camera)
    return maker(config, recipe.cameras.get(config.name, CameraSettings()))


def make_cameras(cell: CellConfig, recipe: Recipe) -> dict[str, Camera]:
    """Open the cell's cameras (raises CameraError; those opened before are closed again)."""
    cams: dict[str, Camera] = {}
    try:
        for c in cell.cameras:
            cams[c.name] = make_camera(c, recipe)
    except CameraError:
        for opened in cams.values():
            opened.stop()
        raise
    return cams
