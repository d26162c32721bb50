"""`cellctl run` on the simulated line with MQTT (a real broker) and OPC UA enabled, as a plant
sees it: every part's MQTT message once (repeats dropped by seq) matching the record store,
OPC UA variables that follow the running line and result events matching the records, recipe
selection in a safe and an unsafe state, a viewer refused a command, and a clean stop that
leaves `online` false ("stopped"), not the last will."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadUserAccessDenied

from controller.api import request
from controller.config import load_cell_config
from controller.sim_line import start_line
from simulators.scorer import load_records
from tests.brokers import Broker, Listener, free_port
from tests.e2e.test_service import CELL, RECIPE, ROOT

NS = "urn:inspection-cell:machine-vision"
PASSWORDS = {"vic": "viewer-pw-e2e", "emil": "engineer-pw-e2e"}
ENV = {"E2E_VIC_PW": PASSWORDS["vic"], "E2E_EMIL_PW": PASSWORDS["emil"]}
TOPICS = "inspection/v1/plant1/pack/line2/demo-cell"
PARTS = 300


def plant_cell(line_cell: Path, broker: Broker, opcua_port: int, out: Path) -> Path:
    """The line's cell config with MQTT and OPC UA enabled, written as an integrator would."""
    data = yaml.safe_load(line_cell.read_text())
    data["mqtt"] = {
        "enabled": True, "port": broker.port, "site": "plant1", "area": "pack", "line": "line2",
        "status_interval_s": 1, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
    }  # fmt: skip
    data["opcua"] = {
        "enabled": True, "endpoint": f"opc.tcp://127.0.0.1:{opcua_port}/cell/", "security": "none",
        "simulated": True, "status_interval_s": 0.2,
        "users": [
            {"name": "vic", "role": "viewer", "password_env": "E2E_VIC_PW"},
            {"name": "emil", "role": "engineer", "password_env": "E2E_EMIL_PW"},
        ],
    }  # fmt: skip
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    load_cell_config(out)  # valid as written
    return out


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.events.append(event)


def client(port: int, user: str) -> Client:
    c = Client(f"opc.tcp://127.0.0.1:{port}/cell/", timeout=5)
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    return c


async def node(c: Client, *path: str) -> Any:
    idx = await c.get_namespace_index(NS)
    return await c.nodes.objects.get_child([f"{idx}:{p}" for p in ("InspectionCell", *path)])


async def call(c: Client, *path: str, args: tuple[Any, ...]) -> Any:
    return await (await node(c, *path[:-1])).call_method((await node(c, *path)).nodeid, *args)


def select(name: str) -> tuple[Any, ...]:
    return (name, ua.Variant(0, ua.VariantType.Int32))


async def wait_state(c: Client, state: str, timeout_s: float = 15.0) -> None:
    var = await node(c, "PackTags", "Status", "StateCurrentName")
    deadline = time.monotonic() + timeout_s
    while (value := await var.read_value()) != state:
        assert time.monotonic() < deadline, f"state {value}, not {state}"
        await asyncio.sleep(0.05)


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_the_plant_sees_the_running_cell_over_mqtt_and_opcua(mqtt_broker: Broker, tmp_path: Path) -> None:
    served = start_line(CELL, RECIPE, tmp_path / "line", parts_per_min=1200)
    sim, sock, port = served.sim, tmp_path / "cell.sock", free_port()
    cell_file = plant_cell(served.cell_file, mqtt_broker, port, tmp_path / "plant-cell.yaml")
    env = dict(os.environ, **ENV, PYTHONFAULTHANDLER="1")
    env.pop("NOTIFY_SOCKET", None)
    cmd = [
        sys.executable, "-m", "controller.cli", "run", "--cell", str(cell_file), "--recipe", "plate-4h",
        "--recipes", str(ROOT / "recipes"), "--data-dir", str(tmp_path / "data"), "--socket", str(sock),
        "--drain-timeout", "3",
    ]  # fmt: skip
    listener = Listener(mqtt_broker.port, f"{TOPICS}/#", client_id="e2e-plant")
    log = (tmp_path / "service.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        deadline = time.monotonic() + 60
        while True:  # the API answers once the service (and its plant links) started
            assert proc.poll() is None and time.monotonic() < deadline, "the service did not start"
            try:
                if (await asyncio.to_thread(request, sock, {"op": "status"}))["status"]["ready"]:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.2)
        async with client(port, "emil") as eng, client(port, "vic") as viewer:
            handler = Collect()
            sub = await eng.create_subscription(50, handler)
            idx = await eng.get_namespace_index(NS)
            etype = await eng.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            await sub.subscribe_events(await node(eng), etype, queuesize=10_000)
            await wait_state(eng, "STOPPED")
            # A safe state: the recipe changes, through the cell's changeover path.
            seen["safe"] = await call(eng, "RecipeManagement", "SelectRecipe", args=select("plate-4h-long"))
            with pytest.raises(BadUserAccessDenied):  # a viewer may not command
                await call(viewer, "PackTags", "Command", args=("reset",))
            assert await call(eng, "PackTags", "Command", args=("reset",)) == [True, ""]
            await wait_state(eng, "IDLE")
            assert await call(eng, "PackTags", "Command", args=("start",)) == [True, ""]
            await wait_state(eng, "EXECUTE")
            processed = await node(eng, "PackTags", "Admin", "ProdProcessedCount")
            counts = []
            while sim.status()[1] < PARTS:
                counts.append(await processed.read_value())
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # the status follows within status_interval_s
            seen["counts"] = [*counts, await processed.read_value()]
            seen["speed"] = await (await node(eng, "PackTags", "Status", "CurMachSpeed")).read_value()
            seen["recipe"] = await (await node(eng, "PackTags", "Status", "RecipeName")).read_value()
            seen["hash"] = await (await node(eng, "PackTags", "Status", "RecipeHash")).read_value()
            # An unsafe state: aborted, the recipe change is refused with the reason.
            assert await call(eng, "PackTags", "Command", args=("abort",)) == [True, ""]
            await wait_state(eng, "ABORTED")
            seen["unsafe"] = await call(eng, "RecipeManagement", "SelectRecipe", args=select("plate-4h"))
            await asyncio.sleep(0.5)  # the last result events of the parts the abort decided
            seen["events"] = list(handler.events)
            await sub.delete()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        listener.wait_for(
            lambda: any(not json.loads(p)["data"]["online"] for p, _ in listener.on("online")),
            what="online false after the stop",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        listener.close()
        served.stop()
    out = (tmp_path / "service.log").read_text()
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]

    db = tmp_path / "data" / "var" / "records.sqlite"
    with sqlite3.connect(db) as con:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    records = load_records(db, run_id)
    assert len(records) >= PARTS
    long_hash = next(r["recipe_hash"] for r in records.values())

    # OPC UA: methods, variables that followed the line, result events matching the records.
    assert seen["safe"][:2] == ["active", 1], seen["safe"]
    assert seen["unsafe"][0] == "not_safe" and "ABORTED" in seen["unsafe"][2], seen["unsafe"]
    counts = seen["counts"]
    assert counts[-1] >= PARTS - 20 and counts == sorted(counts) and counts[0] < counts[-1], counts
    assert seen["speed"] > 600 and seen["recipe"] == "plate-4h-long" and seen["hash"] == long_hash[:12]
    events = seen["events"]
    assert len(events) >= PARTS - 20
    for ev in events:
        rec = records[int(ev.PartId)]
        assert ev.ResultId == f"{run_id}:{ev.PartId}" and ev.RunId == run_id and ev.IsSimulated is True
        assert ev.Verdict == rec["verdict"].lower() and ev.RecipeHash == rec["recipe_hash"][:12]
        assert ev.RecipeId == "plate-4h-long"
    assert len({ev.ResultId for ev in events}) == len(events)

    # MQTT: every part once after dropping repeats by (stream, seq), matching the record store.
    bodies = [json.loads(p) for p, _ in listener.on("part")]
    once = {(b["stream"], b["seq"]): b for b in bodies}
    parts = [b["data"] for b in once.values()]
    assert sorted(p["part_id"] for p in parts) == sorted(records), "each recorded part exactly once"
    for p in parts:
        rec = records[p["part_id"]]
        assert p["run"] == run_id and p["verdict"] == rec["verdict"].lower()
        assert p["recipe_hash"] == rec["recipe_hash"] and p["model_hash"] == rec["model_hash"]
    states = [json.loads(p)["data"] for p, _ in listener.on("state")]
    assert ("start", "opcua") in [(s["trigger"], s["cause"]) for s in states]  # who started the line
    assert next(s for s in states if s["to_state"] == "aborting")["cause"] == "opcua"
    # The server's process selects recipes through the control API, audited as from OPC UA.
    recipes = [json.loads(p)["data"] for p, _ in listener.on("recipe")]
    assert ("plate-4h-long", "opcua") in [(r["name"], r["source"]) for r in recipes], recipes
    assert ("plate-4h", "opcua") in [(r["name"], r["source"]) for r in recipes], recipes  # refused
    online = [json.loads(p)["data"] for p, _ in listener.on("online")]
    assert online[-1]["online"] is False and online[-1]["reason"] == "stopped", online  # not the will
    status = [json.loads(p)["data"] for p, _ in listener.on("status")]
    assert any(s["cell"] and s["cell"]["state"] == "EXECUTE" for s in status)
    assert "plant mqtt:" in out and "plant opcua:" in out
