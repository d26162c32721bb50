"""`cellctl run` as systemd runs it: a subprocess on the simulated cell, its notifications read
from a test notify socket, commanded through the local API, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.api import request
from controller.sim_line import start_line
from simulators.launcher import SimLine
from simulators.scorer import load_run, score

ROOT = Path(__file__).resolve().parents[2]
CELL = ROOT / "recipes/cells/demo-cell.yaml"
RECIPE = ROOT / "recipes/plate-4h.yaml"


class Notifications:
    """A stand-in for systemd's notify socket: a thread collects what the service sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.seen: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="test-notify", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.seen.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait_for(self, key: str, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in list(self.seen):
                if key in msg:
                    return msg
            time.sleep(0.05)
        raise AssertionError(f"no {key} within {timeout} s; seen {self.seen[-5:]}")

    def count(self, key: str) -> int:
        return sum(key in m for m in list(self.seen))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[SimLine, Path]]:
    """The simulated line in this process, its cameras served on sockets; a cell config for it
    (as `cellctl sim` starts it)."""
    served = start_line(CELL, RECIPE, tmp_path / "line", parts_per_min=1200)
    try:
        yield served.sim, served.cell_file
    finally:
        served.stop()


def start_service(tmp_path: Path, cell_file: Path, notify: Notifications) -> subprocess.Popen[str]:
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="600000", PYTHONFAULTHANDLER="1")
    env.pop("WATCHDOG_PID", None)
    cmd = [
        sys.executable, "-m", "controller.cli", "run", "--cell", str(cell_file), "--recipe", "plate-4h",
        "--recipes", str(ROOT / "recipes"), "--data-dir", str(tmp_path / "data"),
        "--socket", str(tmp_path / "cell.sock"), "--drain-timeout", "3",
    ]  # fmt: skip
    with (tmp_path / "service.log").open("w") as log:  # a file: a pipe nobody reads would block it
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_service_notifies_systemd_obeys_the_api_and_drains_on_sigterm(
    tmp_path: Path, line: tuple[SimLine, Path]
) -> None:
    sim, cell_file = line
    notify = Notifications(tmp_path / "notify.sock")
    sock = tmp_path / "cell.sock"
    proc = start_service(tmp_path, cell_file, notify)
    try:
        notify.wait_for("READY", 60.0)
        time.sleep(1.5)
        assert notify.count("WATCHDOG") >= 3  # petted every 0.3 s (half of WatchdogSec)
        statuses = [m["STATUS"] for m in list(notify.seen) if "STATUS" in m]
        assert statuses[-1].startswith("STOPPED plate-4h 0/min, 0 passed, 0 rejected, PLC up"), statuses

        refused = request(sock, {"op": "command", "command": "start"})
        assert not refused["ok"] and "STOPPED" in refused["error"]
        assert request(sock, {"op": "command", "command": "reset"})["ok"]
        time.sleep(0.2)
        assert request(sock, {"op": "command", "command": "start"})["ok"]
        deadline = time.monotonic() + 20
        while sim.status()[1] < 80:
            assert time.monotonic() < deadline, "the line never fed parts"
            time.sleep(0.1)
        st = request(sock, {"op": "status"})["status"]
        assert st["state"] == "EXECUTE" and st["ready"] and st["parts"] > 40
        assert set(st["camera_fps"]) == {"top", "left", "right"}

        registered = sim.status()[1]
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - t_term
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            time.sleep(1.0)
            proc.kill()
            proc.wait()
        notify.close()
        out = (tmp_path / "service.log").read_text()
    print(out[-3000:])
    assert proc.returncode == 0, out[-2000:]
    assert took < 3 + 8  # the drain timeout plus the flush
    assert notify.count("STOPPING") == 1
    assert "Traceback" not in out
    # A stop by signal says so in the journal, not "api" (a systemd stop is not an operator's).
    assert "-> STOPPING (stop, shutdown)" in out, out[-2000:]

    fed = sim.close_infeed()
    deadline = time.monotonic() + 10
    while sim.status()[2] < fed and time.monotonic() < deadline:
        time.sleep(0.05)
    outcomes, dropped = sim.outcomes()
    db = tmp_path / "data" / "var" / "records.sqlite"
    with sqlite3.connect(db) as con:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    seen_by_cell = [o for o in outcomes if o.part_id <= registered]
    r: dict[str, Any] = score(seen_by_cell, load_run(db, run_id), dropped)
    print(json.dumps(r, indent=2))
    assert r["parts"] == registered
    assert r["lost"] == 0 and r["misrouted"] == 0 and r["passed_without_verdict"] == 0
