"""The small interfaces between the cell and its edges: cameras, PLC link, inference runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from controller.contract import Verdict


class CameraError(Exception):
    """A camera that cannot be opened or configured; the message names it and says why."""


@dataclass(slots=True)
class Frame:
    """One grabbed image. `image` is a view into a driver buffer: call `release()` when done."""

    camera: str
    counter: int
    t_trigger: float
    t_received: float
    image: np.ndarray
    release: Callable[[], None]


@dataclass
class CameraStats:
    frames: int = 0
    skipped: int = 0  # frame counter gaps: triggered but never delivered
    underruns: int = 0  # no free buffer: delivered but dropped here
    bad: int = 0
    removals: int = 0  # times the device went away (unplugged, power, cable)
    connected: bool = True


class Camera(Protocol):
    """A hardware-triggered camera. Frames arrive on the driver's own thread via `on_frame`."""

    name: str
    stats: CameraStats

    def start(self, on_frame: Callable[[Frame], None]) -> None: ...

    def stop(self) -> None: ...


class PlcLink(Protocol):
    """A connection to the PLC's two exchange areas. Blocking; owned by one I/O thread."""

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def read_inputs(self) -> np.void:
        """The whole PLC → cell area in one request, as a structured record."""
        ...

    def read_triggers(self) -> np.void:
        """The whole trigger area (PLC → cell) in one request (with `plc.trigger_ring`)."""
        ...

    def write_header(self, data: bytes) -> None:
        """The cell → PLC header (heartbeat, state, acknowledgements)."""
        ...

    def write_verdict(
        self, part_id: int, verdict: Verdict, reason: int, attempt: int, sensor_count: int
    ) -> None:
        """One verdict slot, in one request; `sensor_count` echoes the part's, so the PLC can tell
        a verdict for this part from a stale one for an earlier part with the same id."""
        ...
