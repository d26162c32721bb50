"""The MQTT publisher against a real broker on 127.0.0.1 (Mosquitto, else amqtt): the topic and
payload contract, order, retained state, a broker outage, a restart with a full spool, the last will."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.contract import RecipeResult, Verdict
from controller.core.packml import State, StateChanged
from controller.core.types import ReasonCode, ViewStatus
from controller.events import (
    AlarmCleared,
    AlarmRaised,
    EventOutlet,
    LinkDown,
    LinkUp,
    PartRecorded,
    RecipeActivated,
    RecipeRefused,
    ViewOutcome,
)
from controller.plant import MqttConfig, MqttPublisher
from tests.brokers import Broker, Listener, make_tls_files

ROOT = "acme/v1/plant1/pack/line2/cell3"
ENVELOPE = {"v": int, "type": str, "stream": str, "seq": int, "time": str, "cell": dict, "data": dict}
PART_FIELDS = {
    "part_id", "run", "epoch", "verdict", "reason", "reasons", "inspected", "views", "latency_ms", "recipe",
    "recipe_number", "recipe_hash", "model_hash", "kicked", "alarms", "time", "lot",
}  # fmt: skip


def config(broker: Broker, **over: Any) -> MqttConfig:
    fields: dict[str, Any] = {
        "enabled": True, "port": broker.port, "prefix": "acme", "site": "plant1", "area": "pack",
        "line": "line2", "cell": "cell3", "lot": "L42", "status_interval_s": 0.5, "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.2, "close_flush_s": 2.0,
    }  # fmt: skip
    return MqttConfig.model_validate(fields | over)


def part(part_id: int) -> PartRecorded:
    view = ViewOutcome("top", ViewStatus.OK, ReasonCode.NONE, (0.12,), (), ())
    return PartRecorded(
        part_id, "run-1", 1, Verdict.PASS, ReasonCode.NONE, (), True, (view,), 9.5, "bracket", 7,
        "r" * 64, "m" * 64, False, (),
    )  # fmt: skip


@pytest.fixture
def wired(mqtt_broker: Broker, tmp_path: Path) -> Iterator[tuple[EventOutlet, MqttPublisher]]:
    """An outlet with the publisher subscribed, as the service wires it."""
    outlet = EventOutlet()
    pub = MqttPublisher(config(mqtt_broker), tmp_path / "spool.sqlite")
    pub.set_status({"parts": 3, "p99_ms": 4.2})  # as the daemon pushes it from the cell's loop
    pub.start()
    outlet.subscribe("mqtt", pub.on_event, on_close=pub.close)
    try:
        yield outlet, pub
    finally:
        outlet.close(timeout=5.0)


def body(payload: bytes) -> dict[str, Any]:
    """A message's body, checked against the envelope of contract v1."""
    b: dict[str, Any] = json.loads(payload)
    for key, kind in ENVELOPE.items():
        if key in ("stream", "seq") and b.get("type") in ("status", "online"):
            continue  # only event messages are numbered
        if key == "time" and b.get("type") == "online" and b["data"].get("reason") == "connection lost":
            continue  # the last will: the broker sends it, at a time nobody wrote into it
        assert isinstance(b.get(key), kind), f"{key} should be {kind.__name__}: {b}"
    assert b["v"] == 1 and b["cell"] == {"site": "plant1", "area": "pack", "line": "line2", "cell": "cell3"}
    return b


def event_bodies(listener: Listener) -> list[dict[str, Any]]:
    kinds = ("part", "state", "alarm", "recipe", "link")
    return [body(p) for t, p, _ in list(listener.messages) if t.rsplit("/", 1)[1] in kinds]


def in_order_once(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with repeats dropped by (stream, seq), as a consumer does; checks that a
    repeat is the same message and that what is left runs without gaps."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for b in bodies:
        key = (b["stream"], b["seq"])
        if key in seen:
            assert seen[key] == b, f"seq {b['seq']} came twice with different bodies"
            continue
        if out:
            assert b["seq"] == out[-1]["seq"] + 1, (
                f"seq {b['seq']} after {out[-1]['seq']}: out of order or a gap"
            )
        seen[key] = b
        out.append(b)
    return out


def wait(condition: Any, timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_every_event_arrives_on_its_topic_in_order_with_the_contracts_schema(
    mqtt_broker: Broker, wired: tuple[EventOutlet, MqttPublisher]
) -> None:
    outlet, pub = wired
    events = [
        LinkUp("connected"),
        StateChanged(State.IDLE, State.STARTING, "start", "plc"),
        StateChanged(State.STARTING, State.EXECUTE, "state_complete"),
        RecipeActivated("plc", "bracket", "r" * 64, RecipeResult.ACTIVE, "from part 1"),
        *(part(i) for i in range(1, 6)),
        AlarmRaised(3, "PLC_LINK_LOST", "PLC link lost"),
        LinkDown("timeout"),
        AlarmCleared(3, "PLC_LINK_LOST", "PLC link lost", 1),
        RecipeRefused("cli", "nope", "", RecipeResult.UNKNOWN_NUMBER, "no such recipe"),
    ]
    with Listener(mqtt_broker.port, f"{ROOT}/#") as live:
        for e in events:
            outlet.publish(e)
        live.wait_for(lambda: len(event_bodies(live)) == len(events), what="every event message")
        got = in_order_once(event_bodies(live))
        assert [b["seq"] for b in got] == list(range(1, len(events) + 1))
        assert [b["type"] for b in got] == [
            "link_up", "state_changed", "state_changed", "recipe_activated", *["part_recorded"] * 5,
            "alarm_raised", "link_down", "alarm_cleared", "recipe_refused",
        ]  # fmt: skip
        parts = [b["data"] for b in got if b["type"] == "part_recorded"]
        assert [p["part_id"] for p in parts] == [1, 2, 3, 4, 5]
        assert set(parts[0]) == PART_FIELDS and parts[0]["lot"] == "L42" and parts[0]["verdict"] == "pass"
        assert parts[0]["views"][0]["scores"] == [0.12] and parts[0]["recipe_hash"] == "r" * 64
        topics = [t for t, _, _ in live.messages]
        assert f"{ROOT}/part" in topics and f"{ROOT}/state" in topics and f"{ROOT}/alarm" in topics
        live.wait_for(lambda: live.on("status"), what="a status message")
        status = body(live.on("status")[-1][0])["data"]
        assert status["cell"] == {"parts": 3, "p99_ms": 4.2} and status["mqtt"]["connected"] is True
        wait(lambda: pub.figures().sent == len(events) and pub.figures().queued == 0, what="all acknowledged")

    # A consumer that comes later finds the current state retained.
    with Listener(mqtt_broker.port, f"{ROOT}/#", client_id="late") as late:
        late.wait_for(
            lambda: (
                {"state", "link", "recipe", "online", "status"}
                <= {t.rsplit("/", 1)[1] for t, _, _ in late.messages}
            )
        )
        retained = {t.rsplit("/", 1)[1]: body(p) for t, p, r in late.messages if r}
        assert retained["state"]["data"]["to_state"] == "execute"
        assert retained["link"]["type"] == "link_down"
        assert retained["recipe"]["type"] == "recipe_activated"  # a refusal does not replace it
        assert retained["online"]["data"]["online"] is True
        assert "part" not in retained and "alarm" not in retained

    outlet.close(timeout=5.0)  # the service's shutdown: the publisher says it is offline
    with Listener(mqtt_broker.port, f"{ROOT}/online", client_id="after") as after:
        after.wait_for(lambda: after.messages)
        assert body(after.messages[-1][1])["data"] == {
            "online": False,
            "reason": "stopped",
            "stream": pub.figures().stream,
        }


def test_a_broker_outage_loses_no_part_and_keeps_the_order(mqtt_broker: Broker, tmp_path: Path) -> None:
    # The test's subscriber must be back on the restarted broker before the publisher is, or it
    # would miss what the publisher flushes: the publisher waits `delay` between attempts.
    delay = 1.0 + 3 * mqtt_broker.start_s
    outlet = EventOutlet()
    pub = MqttPublisher(
        config(mqtt_broker, reconnect_min_s=delay, reconnect_max_s=delay), tmp_path / "s.sqlite"
    )
    first = Listener(mqtt_broker.port, f"{ROOT}/part")
    try:
        pub.start()
        outlet.subscribe("mqtt", pub.on_event, on_close=pub.close)
        wait(lambda: pub.figures().connected, what="the publisher's connection")
        for i in range(1, 31):
            outlet.publish(part(i))
        first.wait_for(lambda: len(first.messages) >= 30, what="the first 30 parts")
        mqtt_broker.pause()  # hung: what the publisher sends now is never acknowledged
        for i in range(31, 41):
            outlet.publish(part(i))
        wait(lambda: pub.figures().inflight == 10, what="10 parts sent and not acknowledged")
        mqtt_broker.kill()
        for i in range(41, 61):  # the broker is down: these wait in the spool
            outlet.publish(part(i))
        wait(
            lambda: not pub.figures().connected and pub.figures().connect_failures >= 1,
            what="a failed reconnect",
        )
        wait(lambda: pub.figures().queued == 30, what="the spool to hold the parts")
        first.close()
        mqtt_broker.start()
        with Listener(mqtt_broker.port, f"{ROOT}/part", client_id="second") as second:
            assert pub.figures().connects == 1, "the publisher reconnected before the test's subscriber"

            def merged() -> list[dict[str, Any]]:
                return in_order_once([body(p) for _, p, _ in first.messages + second.messages])

            second.wait_for(lambda: merged()[-1]["data"]["part_id"] == 60, what="every part after the outage")
            got = merged()
        assert [b["data"]["part_id"] for b in got] == list(range(1, 61))
        wait(lambda: pub.figures().queued == 0, what="an empty spool")
        f = pub.figures()
        assert f.connected and f.connects == 2 and f.dropped == 0 and f.failed == 0 and f.sent >= 60
        assert "lost" in f.last_error or "connect" in f.last_error
    finally:
        first.close()
        outlet.close(timeout=5.0)


def test_what_waited_in_the_spool_goes_out_after_a_restart_of_the_publisher(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    spool = tmp_path / "s.sqlite"
    mqtt_broker.kill()  # the cell runs, the broker is down, the cell stops
    pub = MqttPublisher(config(mqtt_broker, close_flush_s=0.1), spool)
    pub.start()
    for i in range(1, 6):
        pub.on_event(part(i))
    assert pub.figures().queued == 5 and not pub.figures().connected
    pub.close()
    mqtt_broker.start()
    with Listener(mqtt_broker.port, f"{ROOT}/part") as live:
        pub = MqttPublisher(config(mqtt_broker), spool)
        pub.start()
        try:
            pub.on_event(part(6))
            live.wait_for(lambda: len(live.messages) == 6, what="the 6 parts")
            got = in_order_once([body(p) for _, p, _ in live.messages])
            assert [(b["seq"], b["data"]["part_id"]) for b in got] == [(i, i) for i in range(1, 7)]
        finally:
            pub.close()


CHILD = """
import json, sys, time
from pathlib import Path
from controller.plant import MqttConfig, MqttPublisher
pub = MqttPublisher(MqttConfig.model_validate(json.loads(sys.argv[1])), Path(sys.argv[2]))
pub.start()
while not pub.figures().connected:
    time.sleep(0.01)
print("connected", flush=True)
time.sleep(30)
"""


def test_the_last_will_marks_the_cell_offline_when_the_publisher_dies(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    cfg = config(mqtt_broker).model_dump(mode="json")
    with Listener(mqtt_broker.port, f"{ROOT}/online") as live:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(cfg), str(tmp_path / "s.sqlite")],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdout.readline() == b"connected\n"
            live.wait_for(lambda: live.messages, what="the online message")
            assert body(live.messages[-1][1])["data"]["online"] is True
            os.kill(child.pid, signal.SIGKILL)
            child.wait(5)
            live.wait_for(lambda: len(live.messages) >= 2, what="the last will")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
            if child.stdout is not None:
                child.stdout.close()
        will = body(live.messages[-1][1])
        assert will["data"]["online"] is False and will["data"]["reason"] == "connection lost"
    with Listener(mqtt_broker.port, f"{ROOT}/online", client_id="later") as later:
        later.wait_for(lambda: later.messages)
        _, payload, retained = later.messages[-1]
        assert retained and body(payload)["data"]["online"] is False


def own_broker(tmp_path: Path, **options: Any) -> Broker:
    """A Mosquitto broker with users or TLS (skips where Mosquitto or openssl is missing)."""
    try:
        broker = Broker(tmp_path, "mosquitto", **options)
        broker.start()
    except RuntimeError as exc:
        pytest.skip(f"needs Mosquitto: {exc}")
    return broker


def test_a_password_from_the_environment_logs_in_and_a_wrong_one_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = own_broker(tmp_path, users={"cell": "s3cret"})
    monkeypatch.setenv("CELL_MQTT_PASSWORD", "s3cret")
    (tmp_path / "wrong").write_text("guess\n")
    good = MqttPublisher(
        config(broker, username="cell", password_env="CELL_MQTT_PASSWORD"), tmp_path / "a.sqlite"
    )
    bad = MqttPublisher(
        config(broker, username="cell", password_file="wrong", client_id="bad"),
        tmp_path / "b.sqlite",
        files_dir=tmp_path,
    )
    try:
        good.start()
        bad.start()
        good.on_event(part(1))
        bad.on_event(part(1))
        wait(lambda: good.figures().sent == 1, what="the part acknowledged")
        wait(lambda: bad.figures().connect_failures >= 2, what="refused logins")
        f = bad.figures()
        assert not f.connected and f.queued == 1 and "not authori" in f.last_error.lower()
    finally:
        good.close()
        bad.close()
        broker.stop()


def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    try:
        files = make_tls_files(tmp_path)
    except RuntimeError as exc:
        pytest.skip(f"needs openssl: {exc}")
    broker = own_broker(tmp_path, tls=files)
    tls = {"ca_file": files.ca.name, "cert_file": files.client_cert.name, "key_file": files.client_key.name}
    good = MqttPublisher(config(broker, tls=tls), tmp_path / "a.sqlite", files_dir=tmp_path)
    no_cert = MqttPublisher(
        config(broker, tls={"ca_file": str(files.ca)}, client_id="no-cert"), tmp_path / "b.sqlite"
    )
    try:
        good.start()
        no_cert.start()
        good.on_event(part(1))
        wait(lambda: good.figures().sent == 1, what="the part acknowledged over TLS")
        wait(
            lambda: no_cert.figures().connect_failures >= 1,
            what="the broker to refuse a client without a certificate",
        )
        assert not no_cert.figures().connected
    finally:
        good.close()
        no_cert.close()
        broker.stop()
