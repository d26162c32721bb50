"""Basler cameras through pypylon: hardware-triggered grabbing in pylon's own grab loop thread.

The camera is opened by serial number and configured from the cell config and the recipe
(FrameStart trigger on a line, activation edge, exposure, gain, ROI, pixel format). Frames
arrive in pylon's grab loop thread (an image event handler, as Basler advises, not a Python
thread polling RetrieveResult); each is copied once from pylon's buffer (a zero-copy view)
into one of this driver's preallocated buffers, and pylon's buffer goes straight back to the
camera. Frame-number gaps count as skipped frames, failed grabs as bad frames, a lack of free
buffers as underruns.

Frame number and trigger time come from the camera's chunk data (frame counter, exposure
timestamp mapped onto the host clock through a timestamp latch) where the camera has it;
otherwise from the grab result's image number and the host's receive time minus the
configured trigger latency, and for software triggers the time the trigger was fired (or the
time of the hardware pulse it stands for, where the caller gives it).

A removed camera (pylon's device-removal event) is marked gone and counted; a thread looks
for its serial again with backoff, reopens it, replays its configuration and grabs again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pypylon import genicam, pylon

from controller.interfaces import CameraError, CameraStats, Frame
from drivers.frame_pool import FramePool

if TYPE_CHECKING:
    from controller.config import CameraSettings, PylonCameraConfig

__all__ = ["CameraError", "PylonCamera", "PylonSettings", "make_camera", "pylon_settings"]

log = logging.getLogger(__name__)

#: The longest single wait for a camera to be ready for a software trigger (ms).
READY_POLL_MS = 20


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
    use_chunks: bool = True
    reopen_interval_s: float = 1.0


def _set(cam: pylon.InstantCamera, name: str, value: object) -> None:
    try:
        node = getattr(cam, name)
        node.SetValue(value)
    except (genicam.GenericException, AttributeError) as exc:
        raise CameraError(f"{name} = {value!r}: {str(exc).splitlines()[0][:160]}") from None


def _available(cam: pylon.InstantCamera, name: str) -> bool:
    node = cam.GetNodeMap().GetNode(name)
    return node is not None and bool(genicam.IsAvailable(node))


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


class _Removal(pylon.ConfigurationEventHandler):  # type: ignore[misc]
    def __init__(self, owner: PylonCamera) -> None:
        super().__init__()
        self.owner = owner

    def OnCameraDeviceRemoved(self, camera: pylon.InstantCamera) -> None:
        try:
            self.owner.device_removed()
        except Exception:
            log.exception("camera %s: removal handler failed", self.owner.name)


class PylonCamera:
    """One Basler camera by serial number, implementing the controller's `Camera` interface."""

    def __init__(self, name: str, serial: str, settings: PylonSettings) -> None:
        self.name, self.serial, self.settings = name, serial, settings
        self.stats = CameraStats()
        self._cam: pylon.InstantCamera | None = None
        self._handler: _Handler | None = None
        self._removal: _Removal | None = None
        self._on_frame: Callable[[Frame], None] | None = None
        shape = (settings.height, settings.width, 3) if "RGB" in settings.pixel_format else (
            settings.height, settings.width)  # fmt: skip
        self._pool = FramePool(max(2, settings.buffers * 2), shape)
        self._last_id: int | None = None
        self._fired: deque[float] = deque(maxlen=64)  # software triggers not yet answered by a frame
        self._extra: dict[str, object] = {}  # nodes set after open, replayed on reopen
        self._chunks = False
        self._tick_s = 1e-9
        self._clock_offset: float | None = None  # host monotonic minus camera time (s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reopener: threading.Thread | None = None

    # ------------------------------------------------------------------ open
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
        try:
            self._configure(cam)
            for node, value in self._extra.items():
                _set(cam, node, value)
        except CameraError as exc:
            cam.Close()
            cam.DestroyDevice()
            raise CameraError(f"camera {self.name} ({self.serial}): {exc}") from None
        self._removal = _Removal(self)
        cam.RegisterConfiguration(self._removal, pylon.RegistrationMode_Append, pylon.Cleanup_None)
        self._cam = cam
        self._last_id = None
        self._fired.clear()
        self.stats.connected = True

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
        self.set_exposure(s.exposure_us, s.gain_db, cam)
        _set(cam, "MaxNumBuffer", s.buffers)
        self._chunks = s.use_chunks and self._enable_chunks(cam)

    def set_exposure(
        self, exposure_us: float, gain_db: float, cam: pylon.InstantCamera | None = None
    ) -> None:
        """Exposure (µs) and gain (dB); both may change while grabbing. Raises CameraError."""
        cam = cam or self._cam
        if cam is None:
            raise CameraError(f"camera {self.name}: not open")
        # Cameras name exposure and gain in two generations of the standard.
        _set(cam, "ExposureTime" if _available(cam, "ExposureTime") else "ExposureTimeAbs", exposure_us)
        if _available(cam, "Gain"):
            _set(cam, "Gain", gain_db)

    def _enable_chunks(self, cam: pylon.InstantCamera) -> bool:
        """Frame counter and timestamp chunks, where the camera and its transport parse them."""
        if not _available(cam, "ChunkModeActive"):
            return False
        cam.ChunkModeActive.SetValue(True)
        if not _available(cam, "ChunkSelector"):  # e.g. pylon's emulation: no chunk parser
            cam.ChunkModeActive.SetValue(False)
            return False
        wanted = {"Framecounter", "FrameID", "Timestamp"}
        enabled = set()
        for entry in cam.ChunkSelector.GetSymbolics():
            if entry in wanted:
                cam.ChunkSelector.SetValue(entry)
                cam.ChunkEnable.SetValue(True)
                enabled.add(entry)
        if "Timestamp" in enabled:
            self._latch_clock(cam)
        return bool(enabled & {"Framecounter", "FrameID"})

    def _latch_clock(self, cam: pylon.InstantCamera) -> None:
        """Map the camera's timestamp clock onto the host's monotonic clock."""
        if _available(cam, "TimestampLatch"):  # SFNC cameras (ace 2, USB): ns ticks
            latch, value, tick_s = cam.TimestampLatch, cam.TimestampLatchValue, 1e-9
        elif _available(cam, "GevTimestampControlLatch"):  # GigE ace 1: tick frequency node
            latch, value = cam.GevTimestampControlLatch, cam.GevTimestampValue
            tick_s = 1.0 / float(cam.GevTimestampTickFrequency.GetValue())
        else:
            return
        t0 = time.monotonic()
        latch.Execute()
        t1 = time.monotonic()
        ticks, self._tick_s = int(value.GetValue()), tick_s
        self._clock_offset = (t0 + t1) / 2 - ticks * self._tick_s

    def node(self, name: str, value: object) -> None:
        """Set one more GenICam node (emulation settings such as ImageFilename); kept for reopening."""
        if self._cam is None:
            raise CameraError(f"camera {self.name}: not open")
        _set(self._cam, name, value)
        self._extra[name] = value

    # ---------------------------------------------------------------- grabbing
    def start(self, on_frame: Callable[[Frame], None]) -> None:
        if self._cam is None:
            self.open()
        self._on_frame = on_frame
        self._stop.clear()
        self._start_grabbing()

    def _start_grabbing(self) -> None:
        cam = self._cam
        assert cam is not None
        self._handler = _Handler(self)
        cam.RegisterImageEventHandler(self._handler, pylon.RegistrationMode_ReplaceAll, pylon.Cleanup_None)
        cam.StartGrabbing(pylon.GrabStrategy_OneByOne, pylon.GrabLoop_ProvidedByInstantCamera)

    def software_trigger(self, timeout_ms: int = 500, pulse_at: float | None = None) -> bool:
        """Fire a software trigger (emulation and tests stand in for the hardware line).

        `pulse_at`: the host monotonic time of the hardware pulse this trigger stands for; the
        frame carries it, as a hardware-triggered camera's own timestamp would, however late
        this call comes. Without it, the frame carries the time the trigger is fired."""
        cam = self._cam
        if cam is None or not self.stats.connected or not cam.IsGrabbing():
            return False
        deadline = time.monotonic() + timeout_ms / 1000.0
        try:
            # Asked only while a buffer is queued, in short waits: pylon's emulated camera, asked
            # with every buffer full, does not end the wait when it can take a trigger again and
            # stays unready for seconds (triggers were lost; 17 s for 24 triggers, now 0.8 s).
            while not (
                cam.NumQueuedBuffers.GetValue() > 0
                and cam.WaitForFrameTriggerReady(READY_POLL_MS, pylon.TimeoutHandling_Return)
            ):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(READY_POLL_MS / 1000.0)
            self._fired.append(time.monotonic() if pulse_at is None else pulse_at)
            cam.ExecuteSoftwareTrigger()
        except genicam.GenericException:  # removed between the check and the trigger
            return False
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._reopener is not None:
            self._reopener.join(timeout=5.0)
            self._reopener = None
        self._close()

    def _close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            if cam.IsGrabbing():
                cam.StopGrabbing()
            if self._handler is not None:
                cam.DeregisterImageEventHandler(self._handler)
            if self._removal is not None:
                cam.DeregisterConfiguration(self._removal)
            cam.Close()
            cam.DestroyDevice()
        except genicam.GenericException as exc:  # a removed device fails on the way down too
            log.debug("camera %s: closing: %s", self.name, exc)
        self._handler = self._removal = None

    # ------------------------------------------------------------- removal
    @property
    def connected(self) -> bool:
        return self.stats.connected

    def device_removed(self) -> None:
        """The device is gone (pylon's removal event): alarm through stats, reopen in the background."""
        with self._lock:
            if not self.stats.connected or self._stop.is_set():
                return
            self.stats.connected = False
            self.stats.removals += 1
            log.error("camera %s (%s): device removed; looking for it again", self.name, self.serial)
            self._reopener = threading.Thread(
                target=self._reopen, name=f"cam-{self.name}-reopen", daemon=True
            )
            self._reopener.start()

    def _reopen(self) -> None:
        # pylon's handler runs in its own threads: tear down here, never inside the event.
        self._close()
        wait = self.settings.reopen_interval_s
        while not self._stop.wait(wait):
            try:
                self.open()
                if self._on_frame is not None:
                    self._start_grabbing()
            except (CameraError, genicam.GenericException) as exc:
                log.debug("camera %s: not back yet: %s", self.name, exc)
                self._close()
                self.stats.connected = False
                wait = min(wait * 2, 10.0)
                continue
            log.warning("camera %s (%s): back, reconfigured and grabbing", self.name, self.serial)
            return

    # ------------------------------------------------------------------ frames
    def _grabbed(self, result: pylon.GrabResult) -> None:
        now = time.monotonic()
        if not result.GrabSucceeded():
            self.stats.bad += 1
            if self._fired:
                self._fired.popleft()
            log.warning("camera %s: grab failed: %s", self.name, result.GetErrorDescription())
            return
        t_trigger: float | None = None
        if self._chunks:
            has_fc = hasattr(result, "ChunkFramecounter")
            counter = result.ChunkFramecounter if has_fc else result.ChunkFrameID
            number = int(counter.GetValue())
            if self._clock_offset is not None and hasattr(result, "ChunkTimestamp"):
                t_trigger = int(result.ChunkTimestamp.GetValue()) * self._tick_s + self._clock_offset
        else:
            number = int(result.GetImageNumber())
        gap = number - self._last_id - 1 if self._last_id is not None else 0
        if gap > 0:
            self.stats.skipped += gap
            for _ in range(min(gap, len(self._fired))):
                self._fired.popleft()  # triggers whose frames never came
        self._last_id = number
        fired = self._fired.popleft() if self._fired else None
        if t_trigger is None:  # the camera's own timestamp is best, then the fire time, then a guess
            t_trigger = fired if fired is not None else now - self.settings.trigger_latency_s
        idx = self._pool.take()
        if idx is None:
            self.stats.underruns += 1
            return
        out = self._pool.images[idx]
        with result.GetArrayZeroCopy() as view:
            if view.shape != out.shape:
                self.stats.bad += 1
                self._pool.give_back(idx)
                return
            np.copyto(out, view)  # the one copy: pylon's buffer goes back to the camera now
        self.stats.frames += 1
        on_frame = self._on_frame
        if on_frame is not None:
            on_frame(Frame(self.name, number, t_trigger, now, out, self._pool.releaser(idx)))
        else:
            self._pool.give_back(idx)


def pylon_settings(config: PylonCameraConfig, settings: CameraSettings) -> PylonSettings:
    """The driver's settings for one camera: hardware from the cell config, exposure and gain
    from the recipe's `settings`."""
    c = config
    return PylonSettings(
        width=c.width, height=c.height, offset_x=c.offset_x, offset_y=c.offset_y,
        pixel_format=c.pixel_format, trigger_source=c.trigger_source,
        trigger_activation=c.trigger_activation, exposure_us=settings.exposure_us,
        gain_db=settings.gain_db, buffers=c.buffers, trigger_latency_s=c.trigger_latency_ms / 1000.0,
    )  # fmt: skip


def make_camera(config: PylonCameraConfig, settings: CameraSettings) -> PylonCamera:
    """The camera a cell config's camera (driver pylon) describes, opened by its serial
    (`controller.devices`). Raises CameraError."""
    cam = PylonCamera(config.name, config.serial, pylon_settings(config, settings))
    cam.open()
    return cam
