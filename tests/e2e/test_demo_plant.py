"""Issue 14: `cellctl demo --mqtt --opcua` runs the simulated cell with a local broker and OPC UA
server that a person can watch: a subscriber on the port it prints gets every part's message, an
OPC UA client reads the cell's state, `--json` reports the plant figures, and at the end (or on
SIGTERM) nothing is left: no broker process, no socket, no temporary folder."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from asyncua import Client

from tests.brokers import Listener
from tests.e2e.test_demo_signals import Demo, clean

NS = "urn:inspection-cell:machine-vision"
PARTS = 60


def watched_ports(demo: Demo) -> tuple[int, int]:
    """The ports the demo said to watch (its `MQTT:` and `OPC UA:` lines)."""
    demo.wait_for("OPC UA: opc.tcp://")
    err = demo.err.read_text()
    mqtt = re.search(r"MQTT: mosquitto_sub -h 127\.0\.0\.1 -p (\d+) -v -t 'inspection/v1/#'", err)
    opcua = re.search(r"OPC UA: opc\.tcp://127\.0\.0\.1:(\d+)/inspection-cell/ \(anonymous viewer\)", err)
    assert mqtt and opcua, err[-2000:]
    return int(mqtt.group(1)), int(opcua.group(1))


async def read_state_until(port: int, state: str, timeout_s: float = 30.0) -> list[str]:
    """Anonymously, as a viewer: the cell's PackML state, read until it is `state`."""
    seen: list[str] = []
    async with Client(f"opc.tcp://127.0.0.1:{port}/inspection-cell/", timeout=5) as c:
        idx = await c.get_namespace_index(NS)
        path = [f"{idx}:{p}" for p in ("InspectionCell", "PackTags", "Status", "StateCurrentName")]
        var = await c.nodes.objects.get_child(path)
        deadline = time.monotonic() + timeout_s
        while not seen or seen[-1] != state:
            assert time.monotonic() < deadline, f"state {seen[-1:]}, not {state}"
            seen.append(await var.read_value())
            await asyncio.sleep(0.05)
    return seen


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_subscriber_and_an_opcua_client_watch_the_demo(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--parts", str(PARTS), "--json", "--mqtt", "--opcua")
    try:
        mqtt, opcua = watched_ports(demo)
        with Listener(mqtt, "inspection/v1/#", client_id="e2e-demo") as listener:
            states = asyncio.run(read_state_until(opcua, "EXECUTE"))
            rc, out, err = demo.finish()
            online = [json.loads(p)["data"] for p, _ in listener.on("online")]
            bodies = [json.loads(p) for p, _ in listener.on("part")]
    finally:
        demo.finish()
    clean(err)
    assert rc == 0, err[-2000:]
    result = json.loads(out)
    assert result["parts"] == PARTS and result["records"] == PARTS and result["lost"] == 0
    assert states[-1] == "EXECUTE"
    # Every part's message, once after dropping repeats by (stream, seq).
    once = {(b["stream"], b["seq"]): b["data"] for b in bodies}
    ids = [p["part_id"] for p in once.values()]
    assert len(ids) == len(set(ids)) == PARTS, sorted(ids)
    assert {p["run"] for p in once.values()} == {result["run_id"]}
    assert online[-1]["online"] is False and online[-1]["reason"] == "stopped", online
    plant = result["plant"]
    assert plant["mqtt"]["connected"] is True and plant["opcua"]["connected"] is True, plant  # as it ran
    assert plant["mqtt"]["sent"] >= PARTS and plant["mqtt"]["dropped"] == 0, plant
    assert plant["opcua"]["sent"] == PARTS and plant["opcua"]["dropped"] == 0, plant
    assert refused(mqtt) and refused(opcua), "the broker or the server still listens"
    demo.assert_nothing_left()  # no broker process, socket or temporary folder


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_sigterm_stops_the_demo_broker_too(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--parts", "2000", "--mqtt", "--opcua")
    try:
        mqtt, opcua = watched_ports(demo)
        asyncio.run(read_state_until(opcua, "EXECUTE"))
        demo.signal(signal.SIGTERM)
        rc, _, err = demo.finish()
    finally:
        demo.finish()
    clean(err)
    assert rc == 0, err[-2000:]
    assert refused(mqtt) and refused(opcua), "the broker or the server still listens"
    demo.assert_nothing_left()


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_ctrl_c_to_the_terminal_drains_the_demo_before_its_broker_stops(tmp_path: Path) -> None:
    # A terminal's Ctrl-C goes to its whole process group: the broker must not be in it, or it
    # dies before the demo has sent what it queued (found by a new user: 13 messages queued).
    demo = Demo(tmp_path, "--parts", "2000", "--json", "--mqtt", "--opcua")
    try:
        mqtt, opcua = watched_ports(demo)
        with Listener(mqtt, "inspection/v1/#", client_id="e2e-ctrl-c") as listener:
            asyncio.run(read_state_until(opcua, "EXECUTE"))
            time.sleep(1.0)
            demo.signal(signal.SIGINT, group=True)
            rc, out, err = demo.finish()
            online = [json.loads(p)["data"] for p, _ in listener.on("online")]
    finally:
        demo.finish()
    clean(err)
    assert rc in (0, 130), err[-2000:]
    assert "connection to 127.0.0.1" not in err, err[-2000:]  # the broker stayed up to the end
    plant = json.loads(out)["plant"]
    assert plant["mqtt"]["queued"] == 0 and plant["mqtt"]["dropped"] == 0, plant
    assert online[-1]["online"] is False and online[-1]["reason"] == "stopped", online
    demo.assert_nothing_left()
