"""The cell's devices as its config names them: the PLC link (S7 or Modbus TCP) and the cameras."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.config import CameraConfig, CameraSettings, CellConfig, Recipe
from controller.contract import area_layout
from controller.interfaces import Camera, CameraError, PlcLink

if TYPE_CHECKING:
    from drivers.pylon_camera import PylonSettings


def make_link(cell: CellConfig) -> PlcLink:
    """The PLC link the cell config names (S7 or Modbus TCP)."""
    p = cell.plc
    layout = area_layout(p.ring_size)
    if p.protocol == "modbus":
        from drivers.modbus_link import ModbusPlcLink

        return ModbusPlcLink(
            layout, p.host, p.port, p.device_id, p.plc_register, p.cell_register, p.timeout_s, p.trig_register
        )
    from drivers.s7_link import S7PlcLink

    return S7PlcLink(layout, p.host, p.port, p.rack, p.slot, p.db_plc, p.db_cell, p.timeout_s, p.db_trig)


def pylon_settings(cam: CameraConfig, recipe: Recipe) -> PylonSettings:
    """The Basler driver's settings for one camera: hardware from the cell, exposure from the recipe."""
    from drivers.pylon_camera import PylonSettings

    rs = recipe.cameras.get(cam.name, CameraSettings())
    return PylonSettings(
        width=cam.width, height=cam.height, offset_x=cam.offset_x, offset_y=cam.offset_y,
        pixel_format=cam.pixel_format, trigger_source=cam.trigger_source,
        trigger_activation=cam.trigger_activation, exposure_us=rs.exposure_us, gain_db=rs.gain_db,
        buffers=cam.buffers, trigger_latency_s=cam.trigger_latency_ms / 1000.0,
    )  # fmt: skip


def make_cameras(cell: CellConfig, recipe: Recipe) -> dict[str, Camera]:
    """Open the cell's cameras (raises CameraError): Basler ones by serial, configured from the
    cell config and the recipe; simulated ones by the address a simulated line serves them on."""
    cams: dict[str, Camera] = {}
    try:
        for c in cell.cameras:
            if c.driver in ("socket", "sim"):
                if not c.address:
                    raise CameraError(
                        f"camera {c.name}: a socket camera needs the address it is served on "
                        "(cameras.address), or runs inside `cellctl demo`"
                    )
                from drivers.socket_camera import SocketCamera

                cams[c.name] = SocketCamera(c.name, address=c.address, height=c.height, width=c.width)
                continue
            from drivers.pylon_camera import PylonCamera

            cam = PylonCamera(c.name, c.serial, pylon_settings(c, recipe))
            cam.open()
            cams[c.name] = cam
    except CameraError:
        for opened in cams.values():
            opened.stop()
        raise
    return cams
