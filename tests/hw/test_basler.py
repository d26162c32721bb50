"""A real Basler camera (skipped unless one is named): the paths pylon's emulation cannot run.

    CELL_TEST_BASLER_SERIAL=40012345 .venv/bin/python -m pytest tests/hw -s

The camera is software-triggered here, so no wiring is needed; chunk data (frame counter,
exposure timestamp) is used where the camera has it.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from controller.interfaces import Frame
from drivers.pylon_camera import PylonCamera, PylonSettings

SERIAL = os.environ.get("CELL_TEST_BASLER_SERIAL", "")
pytestmark = pytest.mark.skipif(not SERIAL, reason="no real camera named (CELL_TEST_BASLER_SERIAL)")


def test_real_camera_frames_carry_consecutive_counters_and_host_trigger_times() -> None:
    settings = PylonSettings(
        width=int(os.environ.get("CELL_TEST_BASLER_WIDTH", "640")),
        height=int(os.environ.get("CELL_TEST_BASLER_HEIGHT", "480")),
        pixel_format=os.environ.get("CELL_TEST_BASLER_FORMAT", "RGB8"),
        trigger_source="Software",
        exposure_us=1000.0,
    )
    cam = PylonCamera("hw", SERIAL, settings)
    cam.open()
    got: list[Frame] = []
    done = threading.Event()

    def on_frame(f: Frame) -> None:
        got.append(f)
        f.release()
        if len(got) == 20:
            done.set()

    fired = []
    try:
        cam.start(on_frame)
        for _ in range(20):
            fired.append(time.monotonic())
            assert cam.software_trigger(1000)
            time.sleep(0.02)
        assert done.wait(5.0)
    finally:
        cam.stop()
    counters = [f.counter for f in got]
    assert counters == list(range(counters[0], counters[0] + 20)) and cam.stats.skipped == 0
    for f, t in zip(got, fired, strict=True):
        # Chunk timestamps (exposure start) or the fire time: never before the trigger, and well
        # before the frame was received.
        assert t - 0.002 <= f.t_trigger <= f.t_received
    print(f"chunks {'on' if cam._chunks else 'off'}; trigger→received p50 "
          f"{sorted(f.t_received - f.t_trigger for f in got)[10] * 1e3:.2f} ms")  # fmt: skip
