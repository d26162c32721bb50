"""A fixed set of frame buffers a camera driver receives into: no allocation per frame.

A frame's image is a numpy view into one buffer; the buffer goes back to the pool when the cell
releases the frame. No free buffer when a frame arrives is an underrun (counted by the driver):
the frame is dropped there rather than memory growing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np


class FramePool:
    """`count` buffers of `header` bytes followed by a `shape` uint8 image."""

    def __init__(self, count: int, shape: tuple[int, ...], header: int = 0) -> None:
        size = header + int(np.prod(shape))
        self.buffers = [bytearray(size) for _ in range(count)]
        self.images = [np.frombuffer(b, dtype=np.uint8, offset=header).reshape(shape) for b in self.buffers]
        self._free: deque[int] = deque(range(count))

    def take(self) -> int | None:
        """A free buffer's index, or None when every buffer is held (an underrun)."""
        return self._free.popleft() if self._free else None

    def give_back(self, index: int) -> None:
        self._free.append(index)

    def releaser(self, index: int) -> Callable[[], None]:
        """What the frame's `release()` calls: the buffer goes back to the pool, once (a second
        call would hand one buffer to two frames)."""
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self._free.append(index)

        return release

    @property
    def free(self) -> int:
        return len(self._free)
