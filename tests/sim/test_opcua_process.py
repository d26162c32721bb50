"""The OPC UA server in its own process, as the cell feeds it: events flow in order and the
pushed status shows; a child that dies (SIGKILL) is logged once and shown, and the cell goes
on; a child that stops reading fills the pipe, and the cell drops and counts without waiting."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from asyncua.client.client import Client

from controller.events import EventOutlet
from controller.plant.links import PlantLinks
from controller.plant.mqtt import MqttConfig
from controller.plant.opcua_config import OpcUaConfig
from controller.plant.opcua_process import OpcUaProcess
from simulators.modbus_plc import free_port
from tests.sim.test_opcua_server import NS, Collect, run
from tests.unit.test_opcua_model import part, snapshot


def config(**over: object) -> OpcUaConfig:
    base: dict[str, object] = dict(
        enabled=True, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/cell/", security="none", anonymous=True,
        simulated=True, status_interval_s=0.1,
    )  # fmt: skip
    base.update(over)
    return OpcUaConfig(**base)  # type: ignore[arg-type]


def wait_for(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_events_flow_in_order_and_the_pushed_status_shows(tmp_path: Path) -> None:
    users = [{"name": "olga", "role": "operator", "password_env": "T_OLGA_PW"}]
    # The password is named by a variable of `env`, not of the child's environment: it goes on the pipe.
    proc = OpcUaProcess(config(users=users), tmp_path, api_socket=None, env={"T_OLGA_PW": "olga-pw"})
    proc.start()
    try:
        # The server's CPU gives way to the cell's: its process runs `process_nice` (10) lower.
        assert proc.pid is not None
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(own + 10, 19)

        async def body() -> list[str]:
            c = Client(proc.config.endpoint, timeout=5)
            c.set_user("olga")
            c.set_password("olga-pw")
            async with c:
                idx = await c.get_namespace_index(NS)
                cell = await c.nodes.objects.get_child([f"{idx}:InspectionCell"])
                state = await cell.get_child([f"{idx}:PackTags", f"{idx}:Status", f"{idx}:StateCurrentName"])
                proc.on_snapshot(snapshot(state="EXECUTE"))
                deadline = time.monotonic() + 5
                while await state.read_value() != "EXECUTE":
                    assert time.monotonic() < deadline, "the pushed status did not show"
                    await asyncio.sleep(0.05)
                handler = Collect()
                sub = await c.create_subscription(20, handler)
                etype = await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
                await sub.subscribe_events(cell, etype, queuesize=1000)
                for i in range(1, 201):
                    proc.on_event(replace(part(i), time=1_700_000_000.0 + i))
                got = [(await asyncio.wait_for(handler.events.get(), 10)).PartId for _ in range(200)]
                # A command without the control socket is refused, saying why (not a hang).
                method = await cell.get_child([f"{idx}:PackTags", f"{idx}:Command"])
                packtags = await cell.get_child([f"{idx}:PackTags"])
                accepted, reason = await packtags.call_method(method.nodeid, "reset")
                assert accepted is False and "without the cell's control socket" in reason
                await sub.delete()
                return [str(p) for p in got]

        assert run(body, 30.0) == [str(i) for i in range(1, 201)]
        wait_for(lambda: proc.figures().results_sent == 200)
        f = proc.figures()
        assert f.running and f.events == 200 and f.dropped == 0 and f.failed == 0
    finally:
        proc.stop()
    f = proc.figures()
    assert not f.running and f.exit_code == 0


@pytest.mark.timeout(60)
def test_the_child_killed_is_logged_once_shown_and_the_cell_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    links = PlantLinks(MqttConfig(), config(), "c", tmp_path)
    outlet = EventOutlet()
    links.start(outlet, None, None)  # type: ignore[arg-type]  # the child needs no facade
    assert links.opcua is not None and links.opcua.pid is not None
    assert links.figures()["opcua"]["connected"] is True
    with caplog.at_level(logging.INFO):
        os.kill(links.opcua.pid, signal.SIGKILL)
        wait_for(lambda: links.figures()["opcua"]["connected"] is False)
        for i in range(50):  # the cell goes on publishing; the OPC UA events are dropped, counted
            outlet.publish(part(i))
        wait_for(lambda: links.figures()["opcua"]["dropped"] >= 50)
        t0 = time.monotonic()
        links.close()
        assert time.monotonic() - t0 < 3.0
    ended = [r for r in caplog.records if "server process ended" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.ERROR
    assert "exit code -9" in ended[0].getMessage() and "goes on without OPC UA" in ended[0].getMessage()
    assert links.opcua.figures().exit_code == -signal.SIGKILL
    assert outlet.errors == 0
    outlet.close()


#: A child that says it listens, then never reads its pipe again.
STUCK = [
    sys.executable, "-c",
    "import sys, time; sys.stdin.buffer.readline(); print('{\"ready\": 1}', flush=True); time.sleep(60)",
]  # fmt: skip


@pytest.mark.timeout(60)
def test_a_full_pipe_drops_and_counts_and_never_blocks_on_event(tmp_path: Path) -> None:
    proc = OpcUaProcess(config(queue_size=16), tmp_path, api_socket=None, command=STUCK)
    proc.start()
    n, slowest = 3000, 0.0
    try:
        for i in range(n):
            t0 = time.perf_counter()
            proc.on_event(part(i))
            slowest = max(slowest, time.perf_counter() - t0)
        time.sleep(0.2)  # the writer took what fits in the pipe; the rest waits or was dropped
        f = proc.figures()
        assert f.dropped > n / 2, f  # a 64 KiB pipe holds about a hundred parts
        assert f.events + f.queued + f.dropped == n, f  # each event written, waiting or dropped
        assert f.queued <= 2 * 16  # the queue and the batch being written
        assert slowest < 0.05, f"on_event took {slowest * 1e3:.1f} ms"
    finally:
        t0 = time.monotonic()
        proc.stop(timeout_s=5.0)
        assert time.monotonic() - t0 < 6.0
    assert proc.figures().exit_code == -signal.SIGKILL  # it read nothing: it was killed
