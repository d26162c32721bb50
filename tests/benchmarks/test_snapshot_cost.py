"""Benchmark (make bench): what one status snapshot costs the control loop.

The snapshot is taken on the cell's loop whenever a console (four times a second), the API,
the OPC UA server (each second) or the MQTT status asks, so its cost is time the loop is not
reading the PLC or handing out verdicts. Built here with every latency window full (4 cameras,
the core's 4,096 trigger-to-verdict samples, 2,048 of each stage) and 2,000 finished parts;
prints the best of five rounds of 300 snapshots, in µs. Only asserts that it ran.
"""

from __future__ import annotations

import timeit
from types import SimpleNamespace

import numpy as np
import pytest

from controller.core.counters import Counters
from controller.core.packml import State
from controller.core.window import Window
from controller.interfaces import CameraStats
from controller.service.status import CellStatus
from controller.snapshot import StatusSnapshot

CAMERAS = ("top", "left", "right", "front")


def test_snapshot_cost() -> None:
    rng = np.random.default_rng(1)
    status = CellStatus(CAMERAS, counts_per_mm=10.0)
    for name in ("frame", "queue", "infer", "decide", "write"):
        for x in rng.exponential(0.003, 5000):
            status._stages[name].append(float(x))  # full windows: the steady state of a running line
    for i in range(2000):
        status._finished.append(20.04 + i * 0.04)  # 25 parts/s, oldest first as the service appends
    latencies = Window(4096)
    for x in rng.exponential(0.008, 5000):
        latencies.append(float(x))
    core = SimpleNamespace(state=State.EXECUTE, alarms={}, in_flight=lambda: 12, latencies=latencies)
    cams = {n: SimpleNamespace(stats=CameraStats(frames=100_000, skipped=2)) for n in CAMERAS}

    def snapshot() -> StatusSnapshot:
        return status.snapshot(core, Counters(), cams, "plate-4h", "0" * 64, "CPU", True, True, 100.0)  # type: ignore[arg-type]

    snap = snapshot()
    n = 300
    best = min(timeit.repeat(snapshot, number=n, repeat=5)) / n
    print(f"\nstatus snapshot, full windows, 4 cameras: {best * 1e6:.0f} µs")
    assert snap.parts_per_min == pytest.approx(1500, abs=6)  # the rate window was walked
