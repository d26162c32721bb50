"""The plant links as the daemon wires them, against a real broker on 127.0.0.1: the outlet does
not close the publishers, they close with their own budget after it (a clean stop is "stopped",
never the last will), and the status is pushed from the cell's loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from controller.events import EventOutlet
from controller.plant.config import MqttConfig
from controller.plant.links import PlantLinks, PlantStartError
from controller.plant.opcua_config import OpcUaConfig
from tests.brokers import Broker, Listener, free_port
from tests.sim.test_mqtt_publisher import config, part

ROOT = "acme/v1/plant1/pack/line2/cell3"


class NoControl:
    """A facade nobody calls here (OPC UA off)."""

    def command(self, cmd: object, source: str = "api") -> str | None:
        raise AssertionError("not called")

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> object:
        raise AssertionError("not called")

    def snapshot(self) -> object:
        raise AssertionError("not called")


def test_a_clean_stop_is_stopped_not_the_last_will_even_past_the_outlets_budget(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    # A flush that may take longer than the outlet's close budget (2 s): it is the publisher's own.
    links = PlantLinks(config(mqtt_broker, close_flush_s=5.0), OpcUaConfig(), "cell3", tmp_path)
    outlet = EventOutlet()
    with Listener(mqtt_broker.port, f"{ROOT}/#") as sub:
        links.start(outlet, NoControl(), None)  # type: ignore[arg-type]
        assert links.mqtt is not None
        for pid in range(1, 31):
            outlet.publish(part(pid))
        outlet.close(timeout=2.0)
        # The outlet delivered everything and did not close the publisher: it is still sending.
        assert not links.mqtt._closed
        links.close()
        sub.wait_for(lambda: len(sub.on("part")) >= 30, what="30 parts")
        online = [json.loads(p)["data"] for p, _ in sub.on("online")]
    assert online[0]["online"] is True
    assert online[-1]["online"] is False and online[-1]["reason"] == "stopped", online
    f = links.figures()["mqtt"]
    assert f["sent"] == 30 and f["queued"] == 0 and f["dropped"] == 0


def test_the_status_is_taken_on_the_cells_loop_and_pushed(mqtt_broker: Broker, tmp_path: Path) -> None:
    from tests.unit.test_opcua_model import snapshot

    links = PlantLinks(config(mqtt_broker, status_interval_s=0.5), OpcUaConfig(), "cell3", tmp_path)
    outlet = EventOutlet()
    taken_on: set[str] = set()

    def snap() -> object:
        taken_on.add(threading.current_thread().name)
        return snapshot(parts=12)

    async def go() -> None:
        task = asyncio.create_task(links.follow(snap))  # type: ignore[arg-type]
        await asyncio.sleep(1.2)
        task.cancel()

    with Listener(mqtt_broker.port, f"{ROOT}/status") as sub:
        links.start(outlet, NoControl(), None)  # type: ignore[arg-type]
        try:
            asyncio.run(go())
            sub.wait_for(
                lambda: any(json.loads(p)["data"]["cell"] for p, _ in sub.on("status")), what="a status"
            )
        finally:
            outlet.close()
            links.close()
        cells = [json.loads(p)["data"]["cell"] for p, _ in sub.on("status")]
    assert taken_on == {threading.current_thread().name}  # the loop's thread, never mqtt:...
    assert any(c and c["parts"] == 12 and c["state"] == "EXECUTE" for c in cells)


def test_a_plant_connection_that_cannot_start_is_one_line_and_closes_the_others(tmp_path: Path) -> None:
    cfg = MqttConfig(
        enabled=True, site="s", area="a", line="l", username="u", password_env="NO_SUCH_PLANT_PW_VAR"
    )
    opcua_off = OpcUaConfig()
    with pytest.raises(PlantStartError, match=r"^mqtt: password_env NO_SUCH_PLANT_PW_VAR is not set"):
        PlantLinks(cfg, opcua_off, "c", tmp_path).start(EventOutlet(), NoControl(), None)  # type: ignore[arg-type]
    # MQTT started (no broker: it keeps trying in the background), then OPC UA cannot listen.
    mqtt = MqttConfig(enabled=True, site="s", area="a", line="l", port=free_port(), reconnect_min_s=0.1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        opcua = OpcUaConfig(
            enabled=True, endpoint=f"opc.tcp://127.0.0.1:{port}/x/", security="none", anonymous=True
        )
        links = PlantLinks(mqtt, opcua, "c", tmp_path)
        outlet = EventOutlet()
        with pytest.raises(PlantStartError, match=f"^opcua: cannot listen on opc.tcp://127.0.0.1:{port}/x/"):
            links.start(outlet, NoControl(), None)  # type: ignore[arg-type]
    assert links.mqtt is not None and links.mqtt._closed and outlet.figures() == {}
    outlet.close()


def test_the_demo_gets_a_local_broker_and_a_cell_config_with_both_enabled(tmp_path: Path) -> None:
    from controller.assembly import with_local_plant
    from controller.config import load_cell_config
    from controller.plant.local_broker import start_local_broker
    from tests.e2e.test_service import CELL

    broker = start_local_broker(tmp_path / "broker")
    try:
        cell = with_local_plant(load_cell_config(CELL), mqtt_port=broker.port, opcua_port=4841)
        assert cell.mqtt.enabled and cell.mqtt.port == broker.port and cell.mqtt.host == "127.0.0.1"
        assert cell.opcua.enabled and cell.opcua.endpoint == "opc.tcp://127.0.0.1:4841/inspection-cell/"
        assert cell.opcua.security == "none" and cell.opcua.anonymous
        assert type(cell).model_validate(cell.model_dump()) == cell  # a valid cell config, as written
        with Listener(broker.port, "#"):
            pass  # it answers
    finally:
        broker.stop()
    assert not with_local_plant(load_cell_config(CELL)).mqtt.enabled  # None: left as it is


class Pushed:
    """Stands for the MQTT publisher and the OPC UA process: notes each status pushed, when."""

    def __init__(self) -> None:
        self.at: list[tuple[float, object]] = []

    def set_status(self, status: object) -> None:
        self.at.append((time.monotonic(), status))

    def on_snapshot(self, snap: object) -> None:
        self.at.append((time.monotonic(), snap))


def test_the_status_goes_to_both_each_at_its_own_interval_one_snapshot_when_both_are_due(
    tmp_path: Path,
) -> None:
    from tests.unit.test_opcua_model import snapshot

    mqtt = MqttConfig(enabled=True, site="s", area="a", line="l", status_interval_s=0.6)
    opcua = OpcUaConfig(
        enabled=True, endpoint="opc.tcp://127.0.0.1:4840/x/", security="none", anonymous=True,
        status_interval_s=0.2,
    )  # fmt: skip
    links = PlantLinks(mqtt, opcua, "c", tmp_path)
    links.mqtt, links.opcua = Pushed(), Pushed()  # type: ignore[assignment]
    taken: list[object] = []

    def snap() -> object:
        taken.append(snapshot(parts=len(taken)))
        return taken[-1]

    async def go() -> None:
        task = asyncio.create_task(links.follow(snap))  # type: ignore[arg-type]
        await asyncio.sleep(0.9)
        task.cancel()

    asyncio.run(go())
    to_mqtt, to_opcua = links.mqtt.at, links.opcua.at  # type: ignore[attr-defined]
    assert len(to_mqtt) == 2 and len(to_opcua) == 5, (len(to_mqtt), len(to_opcua))  # at 0, 0.2, ... 0.8 s
    assert len(taken) == len(to_opcua)  # when MQTT is due too, it gets the same snapshot
    assert to_opcua[0][1] is taken[0] and to_mqtt[0][1] == asdict(taken[0])  # type: ignore[call-overload]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(to_opcua)]
    assert all(0.15 < g < 0.3 for g in gaps), gaps
