"""The cell's plant connections as one: the MQTT publisher and the OPC UA server its config
enables, started on the cell's event outlet and control facade, and closed each with its own
time budget.

Lifecycle (the daemon's, `controller.assembly.start_plant`): `PlantLinks(...)`, `start(outlet,
control, cell_loop)` once the service is built (blocking: the OPC UA server listens before it
returns), `follow(snapshot)` as a task on the cell's loop (the MQTT status is pushed from
there, never read from the publisher's thread), `figures()` for the status, and `close()` after
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
from controller.plant.opcua_server import OpcUaServer, OpcUaStartError
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
        self.opcua: OpcUaServer | None = None
        self._outlet: EventOutlet | None = None

    @property
    def enabled(self) -> bool:
        """Whether the config enables any plant connection."""
        return self.mqtt_config.enabled or self.opcua_config.enabled

    def start(
        self, outlet: EventOutlet, control: CellControl, cell_loop: asyncio.AbstractEventLoop | None
    ) -> None:
        """Start the enabled connections and subscribe them to `outlet`. Blocking. Raises
        `PlantStartError` (what started is closed again): a secret that cannot be read, a spool
        that cannot be opened, an OPC UA endpoint that cannot be bound. A broker that cannot
        be reached is not an error: the publisher queues on disk and keeps trying."""
        self._outlet = outlet
        try:
            if self.mqtt_config.enabled:
                spool = self.data_dir / self.mqtt_config.spool.path
                self.mqtt = MqttPublisher(self.mqtt_config, spool, self.cell_name, self.data_dir)
                self.mqtt.start()
                outlet.subscribe("mqtt", self.mqtt.on_event)
            if self.opcua_config.enabled:
                self.opcua = OpcUaServer(self.opcua_config, control, cell_loop, self.data_dir, self._env)
                self.opcua.start()
                outlet.subscribe("opcua", self.opcua.on_event)
        except (SecretError, OpcUaStartError, ValueError, OSError) as exc:
            self.close()
            raise PlantStartError(str(exc)) from None

    async def follow(self, snapshot: Callable[[], StatusSnapshot]) -> None:
        """On the cell's loop until cancelled: push the cell's status to the MQTT publisher
        every `status_interval_s` (the snapshot is taken here, on the loop that owns it)."""
        pub = self.mqtt
        if pub is None:
            return
        while True:
            try:
                pub.set_status(asdict(snapshot()))
            except Exception as exc:  # the status is a courtesy: the next one may work
                log.warning("plant: status for MQTT failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.mqtt_config.status_interval_s)

    def figures(self) -> dict[str, dict[str, Any]]:
        """For the status snapshot, by connection (only those enabled): `connected` (MQTT: to
        the broker; OPC UA: serving), `sent` (MQTT: acknowledged by the broker; OPC UA: result
        events), `queued`, `dropped`; OPC UA also `clients`. Any thread."""
        out: dict[str, dict[str, Any]] = {}
        if self.mqtt is not None:
            m = self.mqtt.figures()
            out["mqtt"] = {"connected": m.connected, "sent": m.sent, "queued": m.queued, "dropped": m.dropped}
        if self.opcua is not None:
            o = self.opcua.figures()
            out["opcua"] = {
                "connected": o.running, "sent": o.results_sent, "queued": o.queued, "dropped": o.dropped,
                "clients": o.clients,
            }  # fmt: skip
        return out

    def close(self) -> None:
        """Unsubscribe, then close both at once, each within its own budget: MQTT sends what is
        queued (up to `close_flush_s`) and sets `online` false ("stopped"); OPC UA closes its
        sessions and socket. Idempotent."""
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
