"""One place builds a cell: a cell config and a recipe in, the service with its PLC link and
cameras out; its plant connections (MQTT, OPC UA) started on it. `cellctl run`, `cellctl demo`
and the tests all build the cell here."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from controller.config import CellConfig, Recipe
from controller.devices import make_cameras, make_link
from controller.interfaces import Camera
from controller.plant.config import MqttConfig
from controller.plant.links import PlantLinks
from controller.plant.opcua_config import OpcUaConfig
from controller.service import CellService


def new_run_id() -> str:
    """A run's id: its start time (local, to the second) and a random suffix."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def build_cell(
    cell: CellConfig,
    recipe: Recipe,
    recipe_dir: Path,
    data_dir: Path,
    *,
    run_id: str | None = None,
    cameras: dict[str, Camera] | None = None,
    drain_timeout_s: float = 5.0,
) -> CellService:
    """The cell's service, its link and cameras opened through the driver registry
    (`controller.devices`); blocking (cameras open, the model loads and warms up).

    `cameras`: cameras the caller opened itself (the demo's in-process simulated line), instead
    of those the cell config names. Cameras opened here are closed again when the service cannot
    be built. Raises CameraError, ModelLoadError and the like.
    """
    opened = make_cameras(cell, recipe) if cameras is None else {}
    try:
        return CellService(
            cell, recipe, recipe_dir, make_link(cell), cameras if cameras is not None else opened,
            run_id or new_run_id(), data_dir, drain_timeout_s,
        )  # fmt: skip
    except BaseException:
        for cam in opened.values():
            cam.stop()
        raise


def start_plant(
    service: CellService,
    data_dir: Path,
    cell_loop: asyncio.AbstractEventLoop | None,
    *,
    api_socket: Path | None = None,
) -> PlantLinks:
    """The plant connections the service's cell config enables, started on its event outlet
    (`cell_loop`: the loop the service runs on), their figures in its status. The OPC UA server
    runs in a process of its own and commands the cell through its control API on `api_socket`
    (None: it refuses commands and recipe selection, saying why). Blocking; call it after `build_cell`, before
    `service.run`. Raises `PlantStartError` (one line). The caller runs `links.follow(service.
    snapshot)` as a task on `cell_loop` and calls `links.close()` after the service stopped."""
    cell = service.cell
    links = PlantLinks(cell.mqtt, cell.opcua, cell.name, data_dir)
    if links.enabled:
        links.start(service.events, service, cell_loop, api_socket=api_socket)
        service.status.plant = links.figures
    return links


def with_local_plant(
    cell: CellConfig, mqtt_port: int | None = None, opcua_port: int | None = None
) -> CellConfig:
    """`cell` with MQTT to a broker on 127.0.0.1:`mqtt_port` and an OPC UA server on
    127.0.0.1:`opcua_port` (security none, anonymous viewers) enabled; None leaves that one as
    it is. For `cellctl demo --mqtt/--opcua`: watch with `mosquitto_sub -v -t 'inspection/v1/#'`
    and any OPC UA client on opc.tcp://127.0.0.1:<port>/inspection-cell/."""
    update: dict[str, object] = {}
    if mqtt_port is not None:
        update["mqtt"] = MqttConfig(
            enabled=True, host="127.0.0.1", port=mqtt_port, site="demo", area="demo", line="line1",
            status_interval_s=2.0, spool=cell.mqtt.spool,
        )  # fmt: skip
    if opcua_port is not None:
        update["opcua"] = OpcUaConfig(
            enabled=True, endpoint=f"opc.tcp://127.0.0.1:{opcua_port}/inspection-cell/", security="none",
            anonymous=True, simulated=True,
        )  # fmt: skip
    return cell.model_copy(update=update)
