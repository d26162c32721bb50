"""The Basler driver against pylon's camera emulation (PYLON_CAMEMU), software triggers standing
in for the hardware line and images fed from files (ImageFilename)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from controller.interfaces import Frame
from drivers.pylon_camera import CameraError, PylonCamera, PylonSettings
from simulators.render import render

SERIAL = "0815-0000"


@pytest.fixture
def camera() -> Iterator[PylonCamera]:
    cam = PylonCamera("top", SERIAL, PylonSettings(trigger_source="Software", buffers=4))
    cam.open()
    yield cam
    cam.stop()


def test_unknown_serial_is_a_clear_error() -> None:
    with pytest.raises(CameraError, match="no device with serial 'nope'"):
        PylonCamera("top", "nope", PylonSettings()).open()


def test_bad_setting_names_the_node() -> None:
    cam = PylonCamera("top", SERIAL, PylonSettings(pixel_format="NotAFormat"))
    with pytest.raises(CameraError, match="PixelFormat = 'NotAFormat'"):
        cam.open()


def test_triggered_frames_carry_the_file_image_and_counters(camera: PylonCamera, tmp_path: Path) -> None:
    img = render(7, 0, ("spot",))
    path = tmp_path / "part.png"
    Image.fromarray(img).save(path)
    camera.node("ImageFilename", str(path))
    camera.node("ImageFileMode", "On")
    camera.node("TestImageSelector", "Off")
    got: list[Frame] = []
    done = threading.Event()

    def on_frame(frame: Frame) -> None:
        got.append(frame)
        if len(got) == 5:
            done.set()

    camera.start(on_frame)
    for _ in range(5):
        assert camera.software_trigger()
    assert done.wait(5.0)
    assert [f.counter for f in got] == sorted(f.counter for f in got)
    assert np.array_equal(got[0].image, img)  # the file's pixels, through pylon's buffer, one copy
    assert camera.stats.frames == 5 and camera.stats.skipped == 0


def test_frames_not_released_run_out_of_buffers_and_are_counted(camera: PylonCamera) -> None:
    held: list[Frame] = []
    camera.start(held.append)  # never releases
    n = len(camera._bufs) + 3
    fired = sum(camera.software_trigger() for _ in range(n))
    deadline = threading.Event()
    for _ in range(50):
        if camera.stats.frames + camera.stats.underruns >= fired:
            break
        deadline.wait(0.05)
    assert camera.stats.frames == len(camera._bufs)
    assert camera.stats.underruns == fired - len(camera._bufs)
