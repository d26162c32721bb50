"""Emulated Basler cameras on the simulated line (pylon's camera emulation, `PYLON_CAMEMU`).

The line PLC's hardware triggers become software triggers, one thread per camera; each
emulated camera plays a folder of pre-rendered images, one file per trigger in name order
(`ImageFilename` set to the folder). Since pylon reads those files by itself, every part's
image must exist before the run: the rig renders the first `parts` parts of the line's
seeded part stream, camera by camera, and the line must then trigger each camera exactly
once per part (no stray triggers, no lost frames; pylon's emulation has no way to lose one).

The trigger threads run in the cell's process (pylon's emulated cameras live in the process that
opened them), so on a loaded machine they fire after the PLC's pulse. Each frame carries its
pulse's time, as a hardware-triggered camera's own timestamp would: were it the time of firing,
the cell would place the frame further along the belt than its trigger record and, rightly,
not pair it. How late each trigger was fired is kept (`fire_delays_s`): it tells a loaded
machine apart from a defect when parts are rejected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path

from PIL import Image

from drivers.pylon_camera import PylonCamera, PylonSettings
from simulators.line import LineConfig, Trigger, receive_triggers
from simulators.parts import PartGenerator
from simulators.render import SIZE, render

log = logging.getLogger(__name__)

#: pylon's emulated cameras are numbered from this serial on.
EMULATED_SERIAL = "0815-{:04d}"
#: How long a trigger waits for its camera to take it. An emulated camera takes none while its
#: grab loop is held up (its buffers full while the cell's process is busy); a trigger dropped
#: then would shift every later image of the camera by a part, since it plays its files in
#: trigger order: so it waits, and a late frame is the cell's to judge (was 100 ms).
READY_TIMEOUT_MS = 2000


def ensure_emulation(cameras: int) -> None:
    """Ask pylon for enough emulated cameras; only works before pylon's transport layers load."""
    have = int(os.environ.get("PYLON_CAMEMU", "0") or 0)
    if have < cameras:
        os.environ["PYLON_CAMEMU"] = str(cameras)


def render_folders(cfg: LineConfig, n_cameras: int, folder: Path) -> list[Path]:
    """One folder per camera with the views of parts 1..cfg.parts, named in trigger order."""
    gen = PartGenerator(cfg.seed, len(cfg.camera_offsets_mm), cfg.defect_rate)
    dirs = [folder / f"cam{k}" for k in range(n_cameras)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(1, cfg.parts + 1):
        truth = gen.next(i)
        for k, d in enumerate(dirs):
            # BMP: pylon reads it back bit for bit and it is the quickest to write.
            Image.fromarray(render(truth.seed, k, truth.visible(k))).save(d / f"{i:06d}.bmp")
    return dirs


#: Trigger delays kept per camera for `fire_delays_s`.
DELAYS_KEPT = 10_000


class PylonRig:
    """Emulated cameras for the simulated line, triggered by the line PLC's trigger stream."""

    def __init__(self, cfg: LineConfig, names: list[str], folder: Path) -> None:
        if cfg.parts <= 0:
            raise ValueError("emulated cameras play pre-rendered parts: give a number of parts")
        if cfg.drop_frames or cfg.extra_triggers:
            raise ValueError("emulated cameras cannot lose frames or take stray triggers")
        self.cfg = cfg
        ensure_emulation(len(names))
        self.cameras: list[PylonCamera] = []
        self._queues: list[queue.Queue[Trigger | None]] = [queue.Queue(maxsize=64) for _ in names]
        self._threads: list[threading.Thread] = []
        self.lost_triggers = 0
        # Each camera's newest: pulse to firing (s); bounded, an open-ended demo runs for days.
        self._delays: list[deque[float]] = [deque(maxlen=DELAYS_KEPT) for _ in names]
        dirs = render_folders(cfg, len(names), folder)
        try:
            for k, (name, d) in enumerate(zip(names, dirs, strict=True)):
                settings = PylonSettings(width=SIZE, height=SIZE, trigger_source="Software", buffers=16)
                cam = PylonCamera(name, EMULATED_SERIAL.format(k), settings)
                cam.open()
                self.cameras.append(cam)
                cam.node("TestImageSelector", "Off")
                cam.node("ImageFileMode", "On")
                cam.node("ImageFilename", str(d))
        except Exception:
            self.close()
            raise

    def start(self, triggers: Connection) -> None:
        """Take triggers from the line PLC (a pipe) and fire each camera's software trigger."""
        self._threads = [
            threading.Thread(target=self._fire, args=(k,), name=f"emu-trigger-{k}", daemon=True)
            for k in range(len(self.cameras))
        ]
        self._threads.append(
            threading.Thread(target=self._route, args=(triggers,), name="emu-trigger-in", daemon=True)
        )
        for t in self._threads:
            t.start()

    def _route(self, triggers: Connection) -> None:
        for trig in receive_triggers(triggers):
            if not isinstance(trig, Trigger):
                continue  # camera faults are the socket rig's; pylon's emulation has its own
            try:
                self._queues[trig.camera].put_nowait(trig)
            except queue.Full:
                self.lost_triggers += 1
        triggers.close()
        for q in self._queues:
            q.put(None)

    def _fire(self, k: int) -> None:
        cam, q, delays = self.cameras[k], self._queues[k], self._delays[k]
        while (trig := q.get()) is not None:
            if not cam.software_trigger(timeout_ms=READY_TIMEOUT_MS, pulse_at=trig.t):
                self.lost_triggers += 1
                part = trig.truth.part_id if trig.truth else None
                log.warning("camera %s: trigger for part %s lost", cam.name, part)
                continue
            delays.append(time.monotonic() - trig.t)

    def fire_delays_s(self) -> list[float]:
        """How long after its PLC pulse each trigger was fired (s), the newest `DELAYS_KEPT` of
        every camera; read it after `join`."""
        return [d for delays in self._delays for d in delays]

    def join(self, timeout: float = 5.0) -> None:
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def close(self) -> None:
        for q in self._queues:
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)
        for cam in self.cameras:
            cam.stop()
