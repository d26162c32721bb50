"""A camera that streams frames over a UNIX socket (or a pipe): the receiving side.

The sender (a camera simulator, `simulators/camera.py`, or a gateway of your own) listens on
the socket; this driver connects, and connects again with backoff whenever the stream breaks.
Each message is one frame, framed as Python's `multiprocessing.connection` frames bytes: the
`FRAME_HEADER` (trigger counter, trigger time on the host's monotonic clock, height, width)
and then height × width × 3 RGB bytes. A named thread receives each frame straight into a
`FramePool` buffer; counter gaps count as skipped frames, no free buffer as an underrun, a
frame of another size as bad.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import BufferTooShort
from multiprocessing.connection import Client, Connection
from typing import TYPE_CHECKING

from controller.interfaces import CameraError, CameraStats, Frame
from drivers.frame_pool import FramePool

if TYPE_CHECKING:
    from controller.config import CameraSettings, SocketCameraConfig

log = logging.getLogger(__name__)

#: trigger counter (u64), trigger time (f64, host CLOCK_MONOTONIC s), height, width (u16), pad.
FRAME_HEADER = struct.Struct("<QdHH4x")


def frame_bytes(height: int, width: int) -> int:
    return FRAME_HEADER.size + height * width * 3


class SocketCamera:
    """Receives one camera's frames into `buffers` preallocated buffers.

    Either over a pipe (`conn`, a sender in the same program), or through the UNIX socket at
    `address`, connecting again with backoff whenever the stream breaks.
    """

    def __init__(
        self,
        name: str,
        conn: Connection | None = None,
        buffers: int = 32,
        address: str | None = None,
        height: int = 64,
        width: int = 64,
    ) -> None:
        if (conn is None) == (address is None):
            raise ValueError("SocketCamera needs a pipe or an address")
        self.name = name
        self.stats = CameraStats(connected=conn is not None)
        self._conn = conn
        self.address = address
        self.height, self.width = height, width
        self._bytes = frame_bytes(height, width)
        self._pool = FramePool(buffers, (height, width, 3), header=FRAME_HEADER.size)
        self._scratch = bytearray(self._bytes)
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
        if self.address is not None and self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> Connection | None:
        """The stream from the rig; None when it is not there (a camera not plugged in)."""
        if self._conn is not None:
            return self._conn
        assert self.address is not None
        wait = 0.1
        while not self._stop.is_set():
            try:
                self._conn = Client(self.address, family="AF_UNIX")
            except OSError:
                self._stop.wait(wait)
                wait = min(wait * 2, 2.0)
                continue
            self.stats.connected = True
            self._last_counter = 0
            return self._conn
        return None

    def _lost(self) -> bool:
        """The stream broke: from a pipe that is the end; from a socket, connect again."""
        if self.address is None:
            return True
        if self.stats.connected:
            self.stats.connected = False
            self.stats.removals += 1
            log.error("camera %s: stream from %s lost; connecting again", self.name, self.address)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return False

    def _run(self, on_frame: Callable[[Frame], None]) -> None:
        while not self._stop.is_set():
            conn = self._connect()
            if conn is None:
                break
            idx = -1
            try:
                if not conn.poll(0.1):
                    continue
                taken = self._pool.take()
                idx = -1 if taken is None else taken
                target = self._pool.buffers[idx] if idx >= 0 else self._scratch
                n = conn.recv_bytes_into(target)
            except BufferTooShort:  # a frame bigger than this camera's: the message is skipped
                self.stats.bad += 1
                if idx >= 0:
                    self._pool.give_back(idx)
                continue
            except (EOFError, OSError):
                if idx >= 0:
                    self._pool.give_back(idx)
                if self._lost():
                    break
                continue
            now = time.monotonic()
            counter, t_trig, h, w = FRAME_HEADER.unpack_from(target, 0)
            if n != self._bytes or (h, w) != (self.height, self.width):
                self.stats.bad += 1  # its header is not to be trusted either
                if idx >= 0:
                    self._pool.give_back(idx)
                continue
            gap = counter - self._last_counter - 1
            if self._last_counter and gap > 0:
                self.stats.skipped += gap
            self._last_counter = counter
            if idx < 0:
                self.stats.underruns += 1
                continue
            self.stats.frames += 1
            on_frame(Frame(self.name, counter, t_trig, now, self._pool.images[idx], self._pool.releaser(idx)))


def make_camera(config: SocketCameraConfig, settings: CameraSettings) -> SocketCamera:
    """The camera a cell config's camera (driver socket) describes (`controller.devices`); it
    connects to its address once started. Exposure and gain are the sender's business."""
    if not config.address:
        raise CameraError(
            f"camera {config.name}: a socket camera needs the address it is served on "
            "(cameras.address, which `cellctl sim` prints), or runs inside `cellctl demo`"
        )
    return SocketCamera(config.name, address=config.address, height=config.height, width=config.width)
