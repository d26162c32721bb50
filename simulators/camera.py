"""Simulated cameras: a rig process renders triggered views; `SimCamera` receives them.

The rig stands for the cameras' own electronics: it gets each hardware trigger (with the
part in front of the lens), renders the view and streams it like a GigE camera would. The
`SimCamera` receiver implements the controller's `Camera` interface: a named thread receives
each frame straight into one of a fixed set of buffers (no per-frame allocation), counts
frame-counter gaps as skipped frames and a lack of free buffers as underruns.
"""

from __future__ import annotations

import logging
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np

from controller.interfaces import CameraStats, Frame
from simulators.line import Trigger
from simulators.render import SIZE, render

log = logging.getLogger(__name__)

HEADER = struct.Struct("<QdHH4x")  # frame counter, trigger time, height, width
FRAME_BYTES = HEADER.size + SIZE * SIZE * 3


def camera_rig_main(triggers: Connection, outputs: list[Connection], drop_frames: float, seed: int) -> None:
    """Process entry: render each trigger's view and send it on that camera's connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher stops this process, not Ctrl-C
    rng = np.random.default_rng([seed, 11])
    counters = [0] * len(outputs)
    buf = bytearray(FRAME_BYTES)
    image = np.frombuffer(buf, dtype=np.uint8, offset=HEADER.size).reshape(SIZE, SIZE, 3)
    while True:
        try:
            trig: Trigger | None = triggers.recv()
        except (EOFError, OSError):
            break
        if trig is None:
            break
        counters[trig.camera] += 1
        if drop_frames and rng.random() < drop_frames:
            continue  # exposed but lost on the way: the counter gap tells the receiver
        truth = trig.truth
        if truth is None:
            render(0, trig.camera, ("empty",), out=image)
        else:
            render(truth.seed, trig.camera, truth.visible(trig.camera), out=image)
        HEADER.pack_into(buf, 0, counters[trig.camera], trig.t, SIZE, SIZE)
        try:
            outputs[trig.camera].send_bytes(buf)
        except (BrokenPipeError, OSError):
            break


class SimCamera:
    """Receives one simulated camera's frames into `buffers` preallocated buffers."""

    def __init__(self, name: str, conn: Connection, buffers: int = 32) -> None:
        self.name = name
        self.stats = CameraStats()
        self._conn = conn
        self._bufs = [bytearray(FRAME_BYTES) for _ in range(buffers)]
        self._images = [
            np.frombuffer(b, dtype=np.uint8, offset=HEADER.size).reshape(SIZE, SIZE, 3) for b in self._bufs
        ]
        self._free: deque[int] = deque(range(buffers))
        self._scratch = bytearray(FRAME_BYTES)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_counter = 0

    def start(self, on_frame: Callable[[Frame], None]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(on_frame,), name=f"cam-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _release(self, idx: int) -> Callable[[], None]:
        return lambda: self._free.append(idx)

    def _run(self, on_frame: Callable[[Frame], None]) -> None:
        conn = self._conn
        while not self._stop.is_set():
            try:
                if not conn.poll(0.1):
                    continue
                idx = self._free.popleft() if self._free else -1
                target = self._bufs[idx] if idx >= 0 else self._scratch
                n = conn.recv_bytes_into(target)
            except (EOFError, OSError):
                break
            now = time.monotonic()
            counter, t_trig, h, w = HEADER.unpack_from(target, 0)
            gap = counter - self._last_counter - 1
            if self._last_counter and gap > 0:
                self.stats.skipped += gap
            self._last_counter = counter
            if idx < 0:
                self.stats.underruns += 1
                continue
            if n != FRAME_BYTES or (h, w) != (SIZE, SIZE):
                self.stats.bad += 1
                self._free.append(idx)
                continue
            self.stats.frames += 1
            on_frame(Frame(self.name, counter, t_trig, now, self._images[idx], self._release(idx)))
