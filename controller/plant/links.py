"""The cell's plant connections as one: the MQTT publisher and the OPC UA server its config
enables, started on the cell's event outlet and control facade, and closed each with its own
time budget.

The OPC UA server runs in a process of its own (`opcua_process`): the cell keeps a thin
subscriber that writes each event onto a pipe to it, pushes it the status, and its commands and
recipe selections come back through the cell's control API (`api_socket`).

Lifecycle (the daemon's, `controller.assembly.start_plant`): `PlantLinks(...)`, `start(outlet,
control, cell_loop, api_socket=...)` once the service is built (blocking: the OPC UA server
listens before it returns), `follow(snapshot)` as a task on the cell's loop (the status for MQTT
and OPC UA is taken there and pushed, never read from another thread), `figures()` for the
status, and `close()` after
the service stopped and its outlet delivered the last events. The outlet does not close them:
its close budget (2 s) is shorter than a publisher's (MQTT sends what is queued and marks the
cell offline; OPC UA closes its sessions), and a publisher cut off there would look crashed to
the plant (the broker's last will).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from controller.control import CellControl
from controller.events import EventOutlet
from controller.plant.config import MqttConfig, SecretError
from controller.plant.mqtt import MqttPublisher
from controller.plant.opcua_config import OpcUaConfig
from controller.plant.opcua_process import OpcUaProcess, OpcUaProcessError
from controller.snapshot import StatusSnapshot

log = logging.getLogger(__name__)


class PlantStartError(RuntimeError):
    """A plant connection could not start; the message says why (one line)."""


class PlantLinks:
    """The enabled plant connections of one cell (none enabled: it does nothing)."""

    def __init__(
        self,
        mqtt: MqttConfig,
        opcua: OpcUaConfig,
        cell_name: str,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Relative paths in both sections (the spool, certificates, TLS and password files)
        are taken from `data_dir`; `env` holds the passwords named by variable (default: the
        process environment)."""
        self.mqtt_config, self.opcua_config = mqtt, opcua
        self.cell_name, self.data_dir, self._env = cell_name, data_dir, env
        self.mqtt: MqttPublisher | None = None
        self.opcua: OpcUaProcess | None = None
        self._outlet: EventOutlet | None = None

    @property
    def enabled(self) -> bool:
        """Whether the config enables any plant connection."""
        return self.mqtt_config.enabled or self.opcua_config.enabled

    def start(
        self,
        outlet: EventOutlet,
        control: CellControl,
        cell_loop: asyncio.AbstractEventLoop | None,
        api_socket: Path | None = None,
    ) -> None:
        """Start the enabled connections and subscribe them to `outlet`. Blocking. Raises
        `PlantStartError` (what started is closed again): a secret that cannot be read, a spool
        that cannot be opened, an OPC UA endpoint that cannot be bound. A broker that cannot
        be reached is not an error: the publisher queues on disk and keeps trying.

        The OPC UA server's process commands the cell through its control API on `api_socket`
        (None: it refuses commands and recipe selection, saying why); `control` and
        `cell_loop` are no longer used by it (kept for the callers)."""
        self._outlet = outlet
        try:
            if self.mqtt_config.enabled:
                spool = self.data_dir / self.mqtt_config.spool.path
                self.mqtt = MqttPublisher(self.mqtt_config, spool, self.cell_name, self.data_dir)
                self.mqtt.start()
                outlet.subscribe("mqtt", self.mqtt.on_event)
            if self.opcua_config.enabled:
                self.opcua = OpcUaProcess(self.opcua_config, self.data_dir, api_socket, self._env)
                self.opcua.start()
                outlet.subscribe("opcua", self.opcua.on_event)
        except (SecretError, OpcUaProcessError, ValueError, OSError) as exc:
            self.close()
            raise PlantStartError(str(exc)) from None

    async def follow(self, snapshot: Callable[[], StatusSnapshot]) -> None:
        """On the cell's loop until cancelled: push the cell's status to the MQTT publisher and
        the OPC UA server, each every its own `status_interval_s` (the snapshot is taken here,
        on the loop that owns it; one snapshot serves both when both are due). Pushed, not
        polled over the control API: the API would take the same snapshot on this loop and
        also parse the request and serialise the reply here; pushed, the OPC UA status is
        serialised on the pipe's writer thread, and costs nothing more when MQTT takes the
        snapshot anyway."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        due: dict[str, float] = {}
        if self.mqtt is not None:
            due["mqtt"] = start
        if self.opcua is not None:
            due["opcua"] = start
        if not due:
            return
        intervals = {"mqtt": self.mqtt_config.status_interval_s, "opcua": self.opcua_config.status_interval_s}
        while True:
            now = loop.time()
            # On a fixed grid from the start, within a few ms: with intervals that are multiples
            # (1 s and 10 s by default) both fall due together and share one snapshot.
            ready = [name for name, at in due.items() if at <= now + 0.005]
            if ready:
                try:
                    snap = snapshot()
                    if "mqtt" in ready and self.mqtt is not None:
                        self.mqtt.set_status(asdict(snap))
                    if "opcua" in ready and self.opcua is not None:
                        self.opcua.on_snapshot(snap)
                except Exception as exc:  # the status is a courtesy: the next one may work
                    log.warning("plant: status failed: %s: %s", type(exc).__name__, exc)
                for name in ready:
                    due[name] = max(due[name] + intervals[name], now)  # behind: no burst to catch up
            await asyncio.sleep(max(0.0, min(due.values()) - loop.time()))

    def figures(self) -> dict[str, dict[str, Any]]:
        """For the status snapshot, by connection (only those enabled): `connected` (MQTT: to
        the broker; OPC UA: its process serving), `sent` (MQTT: acknowledged by the broker; OPC
        UA: result events), `queued`, `dropped`; OPC UA also `clients` and `events` (written to
        its process). Any thread."""
        out: dict[str, dict[str, Any]] = {}
        if self.mqtt is not None:
            m = self.mqtt.figures()
            out["mqtt"] = {"connected": m.connected, "sent": m.sent, "queued": m.queued, "dropped": m.dropped}
        if self.opcua is not None:
            o = self.opcua.figures()
            out["opcua"] = {
                "connected": o.running, "sent": o.results_sent, "queued": o.queued, "dropped": o.dropped,
                "clients": o.clients, "events": o.events,
            }  # fmt: skip
        return out

    def close(self) -> None:
        """Unsubscribe, then close both at once, each within its own budget: MQTT sends what is
        queued (up to `close_flush_s`) and sets `online` false ("stopped"); OPC UA closes its
        sessions and socket, its process ends (killed past its budget). Idempotent."""
        outlet, self._outlet = self._outlet, None
        if outlet is not None:
            for name in ("mqtt", "opcua"):
                outlet.unsubscribe(name)
        closers = [
            threading.Thread(target=fn, name=f"plant-close:{name}", daemon=True)
            for name, fn in (
                ("mqtt", self.mqtt.close if self.mqtt is not None else None),
                ("opcua", self.opcua.stop if self.opcua is not None else None),
            )
            if fn is not None
        ]
        for t in closers:
            t.start()
        for t in closers:
            t.join()  # each bounds its own wait (`close_flush_s` + connect timeout; 10 s)


__all__ = ["PlantLinks", "PlantStartError"]
