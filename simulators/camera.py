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
from multiprocessing.connection import Client, Connection, Listener

import numpy as np

from controller.interfaces import CameraStats, Frame
from simulators.line import CameraFault, receive_triggers
from simulators.render import SIZE, render

log = logging.getLogger(__name__)

HEADER = struct.Struct("<QdHH4x")  # frame counter, trigger time, height, width
FRAME_BYTES = HEADER.size + SIZE * SIZE * 3


class _Served:
    """Camera outputs on UNIX sockets: a receiver may connect, leave and connect again."""

    def __init__(self, addresses: list[str]) -> None:
        self.conns: list[Connection | None] = [None] * len(addresses)
        self._listeners = [Listener(a, family="AF_UNIX") for a in addresses]
        for k, lst in enumerate(self._listeners):
            threading.Thread(target=self._accept, args=(k, lst), name=f"rig-accept-{k}", daemon=True).start()

    def _accept(self, k: int, listener: Listener) -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return
            old, self.conns[k] = self.conns[k], conn
            if old is not None:
                old.close()

    def send(self, k: int, data: bytearray) -> None:
        conn = self.conns[k]
        if conn is None:
            return  # nobody connected: the frame is lost, as with an unplugged cable
        try:
            conn.send_bytes(data)
        except (BrokenPipeError, OSError):
            self.conns[k] = None

    def close(self) -> None:
        for lst in self._listeners:
            lst.close()


def camera_rig_main(
    triggers: Connection, outputs: list[Connection] | list[str], drop_frames: float, seed: int
) -> None:
    """Process entry: render each trigger's view and send it on that camera's connection.

    `outputs` are pipes to `SimCamera`s, or UNIX socket paths that `SimCamera`s connect to
    from another process (the service under test).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher stops this process, not Ctrl-C
    rng = np.random.default_rng([seed, 11])
    served = _Served([str(a) for a in outputs]) if outputs and isinstance(outputs[0], str) else None
    pipes = [c for c in outputs if not isinstance(c, str)]
    counters = [0] * len(outputs)
    buf = bytearray(FRAME_BYTES)
    image = np.frombuffer(buf, dtype=np.uint8, offset=HEADER.size).reshape(SIZE, SIZE, 3)
    faults: dict[int, CameraFault] = {}
    for trig in receive_triggers(triggers):
        if isinstance(trig, CameraFault):
            faults[trig.camera] = trig
            continue
        fault = faults.get(trig.camera)
        if fault is not None and time.monotonic() >= fault.until:
            fault = faults.pop(trig.camera)  # over
            fault = None
        if fault is not None and fault.kind == "freeze":
            continue  # the camera is hung: it does not even count the trigger
        counters[trig.camera] += 1
        if (drop_frames and rng.random() < drop_frames) or (fault is not None and fault.kind == "drop"):
            continue  # exposed but lost on the way: the counter gap tells the receiver
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.value / 1000.0)  # a congested link: every camera's frames wait
        truth = trig.truth
        if truth is None:
            render(0, trig.camera, ("empty",), out=image)
        else:
            render(truth.seed, trig.camera, truth.visible(trig.camera), out=image)
        HEADER.pack_into(buf, 0, counters[trig.camera], trig.t, SIZE, SIZE)
        out = buf if fault is None or fault.kind != "corrupt" else buf[: FRAME_BYTES // 2]
        if served is not None:
            served.send(trig.camera, out)
            continue
        try:
            pipes[trig.camera].send_bytes(out)
        except (BrokenPipeError, OSError):
            break
    if served is not None:
        served.close()


class SimCamera:
    """Receives one simulated camera's frames into `buffers` preallocated buffers.

    Either over a pipe from the rig (`conn`), or from a rig in another process through the
    UNIX socket at `address`, connecting again with backoff whenever the stream breaks.
    """

    def __init__(
        self, name: str, conn: Connection | None = None, buffers: int = 32, address: str | None = None
    ) -> None:
        if (conn is None) == (address is None):
            raise ValueError("SimCamera needs a pipe or an address")
        self.name = name
        self.stats = CameraStats(connected=conn is not None)
        self._conn = conn
        self.address = address
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
        if self.address is not None and self._conn is not None:
            self._conn.close()
            self._conn = None

    def _release(self, idx: int) -> Callable[[], None]:
        return lambda: self._free.append(idx)

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
                idx = self._free.popleft() if self._free else -1
                target = self._bufs[idx] if idx >= 0 else self._scratch
                n = conn.recv_bytes_into(target)
            except (EOFError, OSError):
                if idx >= 0:
                    self._free.append(idx)
                if self._lost():
                    break
                continue
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
