"""Basler cameras through pypylon: hardware-triggered grabbing in pylon's own grab loop thread.

The camera is opened by serial number and configured from the cell config and the recipe
(FrameStart trigger on a line, activation edge, exposure, gain, ROI, pixel format). Frames
arrive in pylon's grab loop thread (an image event handler, as Basler advises, not a Python
thread polling RetrieveResult); each is copied once from pylon's buffer (a zero-copy view)
into one of this driver's preallocated buffers, and pylon's buffer goes straight back to the
camera. Frame-number gaps count as skipped frames, failed grabs as bad frames, a lack of free
buffers as underruns.

Known limits: the frame's trigger time is the host's receive time minus a configured latency
(emulated cameras report timestamp 0); chunk counters, device-removal handling and
reopening are not implemented yet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pypylon import genicam, pylon

from controller.interfaces import CameraStats, Frame

log = logging.getLogger(__name__)


class CameraError(Exception):
    """A camera that cannot be opened or configured; the message names it and says why."""


@dataclass(frozen=True)
class PylonSettings:
    width: int = 64
    height: int = 64
    offset_x: int = 0
    offset_y: int = 0
    pixel_format: str = "RGB8Packed"
    trigger_source: str = "Line1"
    trigger_activation: str = "RisingEdge"
    exposure_us: float = 500.0
    gain_db: float = 0.0
    buffers: int = 8
    trigger_latency_s: float = 0.0


def _set(cam: pylon.InstantCamera, name: str, value: object) -> None:
    try:
        node = getattr(cam, name)
        node.SetValue(value)
    except (genicam.GenericException, AttributeError) as exc:
        raise CameraError(f"{name} = {value!r}: {str(exc).splitlines()[0][:160]}") from None


class _Handler(pylon.ImageEventHandler):  # type: ignore[misc]
    def __init__(self, owner: PylonCamera) -> None:
        super().__init__()
        self.owner = owner

    def OnImageGrabbed(self, camera: pylon.InstantCamera, result: pylon.GrabResult) -> None:
        # An exception escaping here stops pylon's grab loop: nothing may leave this method.
        try:
            self.owner._grabbed(result)
        except Exception:
            self.owner.stats.bad += 1
            log.exception("camera %s: frame handler failed", self.owner.name)


class PylonCamera:
    """One Basler camera by serial number, implementing the controller's `Camera` interface."""

    def __init__(self, name: str, serial: str, settings: PylonSettings) -> None:
        self.name, self.serial, self.settings = name, serial, settings
        self.stats = CameraStats()
        self._cam: pylon.InstantCamera | None = None
        self._handler: _Handler | None = None
        self._on_frame: Callable[[Frame], None] | None = None
        shape = (settings.height, settings.width, 3) if "RGB" in settings.pixel_format else (
            settings.height, settings.width)  # fmt: skip
        self._bufs = [np.empty(shape, dtype=np.uint8) for _ in range(max(2, settings.buffers * 2))]
        self._free: deque[int] = deque(range(len(self._bufs)))
        self._last_id: int | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Find the camera by serial, open and configure it. Raises CameraError."""
        factory = pylon.TlFactory.GetInstance()
        found = [d for d in factory.EnumerateDevices() if d.GetSerialNumber() == self.serial]
        if not found:
            raise CameraError(f"camera {self.name}: no device with serial {self.serial!r}")
        try:
            cam = pylon.InstantCamera(factory.CreateDevice(found[0]))
            cam.Open()
        except genicam.GenericException as exc:
            raise CameraError(f"camera {self.name} ({self.serial}): cannot open: {exc}") from None
        self._cam = cam
        try:
            self._configure(cam)
        except CameraError as exc:
            cam.Close()
            self._cam = None
            raise CameraError(f"camera {self.name} ({self.serial}): {exc}") from None

    def _configure(self, cam: pylon.InstantCamera) -> None:
        s = self.settings
        _set(cam, "PixelFormat", s.pixel_format)
        _set(cam, "OffsetX", 0)
        _set(cam, "OffsetY", 0)
        _set(cam, "Width", s.width)
        _set(cam, "Height", s.height)
        _set(cam, "OffsetX", s.offset_x)
        _set(cam, "OffsetY", s.offset_y)
        _set(cam, "TriggerSelector", "FrameStart")
        _set(cam, "TriggerMode", "On")
        _set(cam, "TriggerSource", s.trigger_source)
        _set(cam, "TriggerActivation", s.trigger_activation)
        # Cameras name exposure and gain in two generations of the standard.
        _set(cam, "ExposureTime" if hasattr(cam, "ExposureTime") else "ExposureTimeAbs", s.exposure_us)
        if hasattr(cam, "Gain"):
            _set(cam, "Gain", s.gain_db)
        _set(cam, "MaxNumBuffer", s.buffers)

    def node(self, name: str, value: object) -> None:
        """Set one more GenICam node (simulators use it for emulation settings such as ImageFilename)."""
        if self._cam is None:
            raise CameraError(f"camera {self.name}: not open")
        _set(self._cam, name, value)

    def start(self, on_frame: Callable[[Frame], None]) -> None:
        if self._cam is None:
            self.open()
        cam = self._cam
        assert cam is not None
        self._on_frame = on_frame
        self._handler = _Handler(self)
        cam.RegisterImageEventHandler(self._handler, pylon.RegistrationMode_ReplaceAll, pylon.Cleanup_None)
        cam.StartGrabbing(pylon.GrabStrategy_OneByOne, pylon.GrabLoop_ProvidedByInstantCamera)

    def software_trigger(self, timeout_ms: int = 500) -> bool:
        """Fire a software trigger (emulation and tests stand in for the hardware line)."""
        cam = self._cam
        if cam is None or not cam.IsGrabbing():
            return False
        if not cam.WaitForFrameTriggerReady(timeout_ms, pylon.TimeoutHandling_Return):
            return False
        cam.ExecuteSoftwareTrigger()
        return True

    def stop(self) -> None:
        cam = self._cam
        if cam is None:
            return
        if cam.IsGrabbing():
            cam.StopGrabbing()
        if self._handler is not None:
            cam.DeregisterImageEventHandler(self._handler)
            self._handler = None
        cam.Close()
        self._cam = None

    def _release(self, idx: int) -> Callable[[], None]:
        return lambda: self._free.append(idx)

    def _grabbed(self, result: pylon.GrabResult) -> None:
        now = time.monotonic()
        if not result.GrabSucceeded():
            self.stats.bad += 1
            log.warning("camera %s: grab failed: %s", self.name, result.GetErrorDescription())
            return
        number = int(result.GetImageNumber())
        if self._last_id is not None and number > self._last_id + 1:
            self.stats.skipped += number - self._last_id - 1
        self._last_id = number
        if not self._free:
            self.stats.underruns += 1
            return
        idx = self._free.popleft()
        out = self._bufs[idx]
        with result.GetArrayZeroCopy() as view:
            if view.shape != out.shape:
                self.stats.bad += 1
                self._free.append(idx)
                return
            np.copyto(out, view)  # the one copy: pylon's buffer goes back to the camera now
        self.stats.frames += 1
        on_frame = self._on_frame
        if on_frame is not None:
            t_trigger = now - self.settings.trigger_latency_s
            on_frame(Frame(self.name, number, t_trigger, now, out, self._release(idx)))
