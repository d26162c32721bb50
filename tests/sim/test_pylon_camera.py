"""The Basler driver against pylon's camera emulation (PYLON_CAMEMU), software triggers standing
in for the hardware line and images fed from files (ImageFilename)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
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
    for k in range(5):
        assert camera.software_trigger()
        _wait(lambda k=k: len(got) > k, timeout=1.0)  # type: ignore[misc]
    assert done.wait(5.0)
    assert [f.counter for f in got] == sorted(f.counter for f in got)
    assert np.array_equal(got[0].image, img)  # the file's pixels, through pylon's buffer, one copy
    assert camera.stats.frames == 5 and camera.stats.skipped == 0


def test_frames_not_released_run_out_of_buffers_and_are_counted(camera: PylonCamera) -> None:
    held: list[Frame] = []
    camera.start(held.append)  # never releases
    n = len(camera._pool.buffers) + 3

    def seen() -> int:
        return camera.stats.frames + camera.stats.underruns

    # One frame at a time: a loaded machine's emulated camera may ignore a trigger while busy.
    while seen() < n:
        before = seen()
        assert camera.software_trigger()
        _wait(lambda before=before: seen() > before, timeout=0.5)  # type: ignore[misc]
    assert camera.stats.frames == len(camera._pool.buffers) == len(held)
    assert camera.stats.underruns == n - len(camera._pool.buffers)


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_emulation_has_no_chunk_parser_so_the_image_number_is_used(camera: PylonCamera) -> None:
    assert camera._chunks is False
    assert camera._cam is not None and not camera._cam.ChunkModeActive.GetValue()


def test_software_triggered_frames_carry_the_time_they_were_fired(camera: PylonCamera) -> None:
    got: list[Frame] = []
    camera.start(lambda f: (got.append(f), f.release()))
    fired = []
    for _ in range(4):
        t0 = time.monotonic()
        assert camera.software_trigger()
        fired.append((t0, time.monotonic()))
        time.sleep(0.03)
    assert _wait(lambda: len(got) == 4)
    for frame, (t0, t1) in zip(got, fired, strict=True):
        assert t0 <= frame.t_trigger <= t1 < frame.t_received


def test_a_software_trigger_for_a_pulse_carries_the_pulses_time(camera: PylonCamera) -> None:
    """A rig that learns of a hardware pulse late (a loaded host) fires for it later: the frame
    says when the pulse came, as a hardware-triggered camera's own timestamp would."""
    got: list[Frame] = []
    camera.start(lambda f: (got.append(f), f.release()))
    pulses = [time.monotonic() - 0.08 for _ in range(3)]
    for k, pulse in enumerate(pulses):
        assert camera.software_trigger(pulse_at=pulse)
        _wait(lambda k=k: len(got) > k, timeout=1.0)  # type: ignore[misc]
    assert _wait(lambda: len(got) == 3)
    assert [f.t_trigger for f in got] == pulses


def test_a_trigger_waits_until_a_camera_with_full_buffers_can_take_it(camera: PylonCamera) -> None:
    """While its handler is held up every buffer fills and the camera takes no trigger; once it
    hands frames on, a waiting trigger is taken (pylon's emulated camera did not end a wait
    then: the whole wait ran out and the trigger was lost)."""
    gate = threading.Event()
    camera.start(lambda f: (gate.wait(), f.release()))
    try:
        for _ in range(20):
            if not camera.software_trigger(timeout_ms=100):
                break
        else:
            pytest.fail("the camera took every trigger with its handler held up")
        threading.Timer(0.3, gate.set).start()
        assert camera.software_trigger(timeout_ms=5000)
    finally:
        gate.set()


def test_exposure_and_gain_change_while_grabbing(camera: PylonCamera) -> None:
    camera.start(lambda f: f.release())
    camera.set_exposure(1234.0, 3.0)
    assert camera._cam is not None
    assert camera._cam.ExposureTime.GetValue() == pytest.approx(1234.0, abs=1.0)
    assert camera._cam.Gain.GetValue() == pytest.approx(3.0, abs=0.1)
    with pytest.raises(CameraError, match="ExposureTime"):
        camera.set_exposure(-5.0, 0.0)


def test_a_removed_camera_is_reported_then_reopened_reconfigured_and_grabbing(tmp_path: Path) -> None:
    img = render(3, 1, ("crack",))
    Image.fromarray(img).save(tmp_path / "part.png")
    cam = PylonCamera("left", SERIAL, PylonSettings(trigger_source="Software", reopen_interval_s=0.1))
    cam.open()
    cam.node("TestImageSelector", "Off")
    cam.node("ImageFileMode", "On")
    cam.node("ImageFilename", str(tmp_path / "part.png"))
    got: list[Frame] = []
    cam.start(lambda f: (got.append(f), f.release()))
    try:
        assert cam.software_trigger() and _wait(lambda: len(got) == 1)
        # pylon's emulation cannot be unplugged: the removal event is delivered by hand, and the
        # device stays away (its serial is not enumerated) until the serial is given back.
        cam.serial = "unplugged"
        cam.device_removed()
        assert not cam.connected and cam.stats.removals == 1
        assert not cam.software_trigger()
        time.sleep(0.5)  # several reopen attempts, all failing
        assert not cam.connected
        cam.serial = SERIAL
        assert _wait(lambda: cam.connected)
        assert cam.software_trigger() and _wait(lambda: len(got) == 2)
        # The replayed configuration: software trigger, file images; the counter restarts.
        assert np.array_equal(got[1].image, img) and got[1].counter == 1
        assert cam.stats.skipped == 0 and cam.stats.removals == 1
    finally:
        cam.stop()


def test_cameras_open_by_serial_from_the_cell_config_with_the_recipes_exposure() -> None:
    from controller.config import PylonCameraConfig, load_cell_config, load_recipe
    from controller.devices import make_cameras

    root = Path(__file__).resolve().parents[2]
    cell = load_cell_config(root / "recipes/cells/demo-cell.yaml")
    recipe = load_recipe(root / "recipes/plate-4h.yaml")
    basler = tuple(
        PylonCameraConfig(
            name=c.name,
            driver="pylon",
            serial=f"0815-000{k}",
            station_mm=c.station_mm,
            trigger_source="Software",
        )
        for k, c in enumerate(cell.cameras[:3])
    )
    cams = make_cameras(cell.model_copy(update={"cameras": basler}), recipe)
    try:
        assert sorted(cams) == ["left", "right", "top"]
        left = cams["left"]
        assert isinstance(left, PylonCamera) and left._cam is not None
        assert left._cam.ExposureTime.GetValue() == pytest.approx(recipe.cameras["left"].exposure_us, abs=1)
        assert left._cam.TriggerSource.GetValue() == "Software"
    finally:
        for cam in cams.values():
            cam.stop()
    wrong = (*basler[:2], basler[2].model_copy(update={"serial": "missing"}))
    with pytest.raises(CameraError, match="camera right: no device with serial 'missing'"):
        make_cameras(cell.model_copy(update={"cameras": wrong}), recipe)
