"""The socket camera driver against a real UNIX socket: good, short and oversized frames."""

from __future__ import annotations

import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path

from controller.interfaces import Frame
from drivers.socket_camera import FRAME_HEADER, SocketCamera, frame_bytes


def test_bad_frames_are_counted_and_the_stream_goes_on(tmp_path: Path) -> None:
    """A short frame and one bigger than the camera's are counted bad; the receiver lives on
    (an oversized message used to kill its thread)."""
    address = str(tmp_path / "cam.sock")
    listener = Listener(address, family="AF_UNIX")
    got: list[Frame] = []
    cam = SocketCamera("top", address=address, buffers=4, height=8, width=8)

    def serve() -> None:
        conn = listener.accept()
        good = bytearray(frame_bytes(8, 8))
        for counter, data in enumerate([good, good[:40], bytearray(frame_bytes(16, 16)), good], start=1):
            FRAME_HEADER.pack_into(data, 0, counter, 1.0, 8, 8)
            conn.send_bytes(data)
        time.sleep(0.5)
        conn.close()

    server = threading.Thread(target=serve, name="test-sender")
    server.start()
    cam.start(lambda f: (got.append(f), f.release()))
    server.join(5.0)
    deadline = time.monotonic() + 3.0
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    cam.stop()
    listener.close()
    assert [f.counter for f in got] == [1, 4]
    assert cam.stats.bad == 2
    assert got[0].image.shape == (8, 8, 3)


def test_a_frame_buffer_goes_back_once_however_often_it_is_released() -> None:
    from drivers.frame_pool import FramePool

    pool = FramePool(2, (4, 4, 3))
    idx = pool.take()
    assert idx is not None
    release = pool.releaser(idx)
    release()
    release()
    assert pool.free == 2
