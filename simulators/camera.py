"""Simulated cameras: a rig process renders each triggered view and streams it.

The rig stands for the cameras' own electronics: it gets each hardware trigger (with the
part in front of the lens), renders the view and streams it like a GigE camera would, in the
frame format `drivers.socket_camera.SocketCamera` receives (`FRAME_HEADER` and RGB bytes).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from multiprocessing.connection import Connection, Listener

import numpy as np

from drivers.socket_camera import FRAME_HEADER, frame_bytes
from simulators.line import CameraFault, receive_triggers
from simulators.render import SIZE, render

log = logging.getLogger(__name__)

HEADER = FRAME_HEADER
FRAME_BYTES = frame_bytes(SIZE, SIZE)


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

    `outputs` are pipes to `SocketCamera`s, or UNIX socket paths that `SocketCamera`s connect to
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
