"""Assigns camera frames to parts by encoder position: one FIFO per camera, a tolerance window.

A frame's position is where the belt was at its trigger instant. Expected triggers older than
the window are missing; a frame matching no expectation is extra, or late when it matches a
part already decided. Nothing is guessed: every mismatch is counted.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum


class MatchKind(Enum):
    MATCHED = "matched"
    EXTRA = "extra"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class Match:
    kind: MatchKind
    part_id: int | None
    missed: tuple[int, ...] = ()


class Matcher:
    """Per-camera expected triggers (position, part id), in belt order."""

    def __init__(self, cameras: list[str], tolerance: int, recent: int = 64) -> None:
        if tolerance <= 0:
            raise ValueError("tolerance must be positive")
        self.tolerance = tolerance
        self._fifo: dict[str, deque[tuple[int, int]]] = {c: deque() for c in cameras}
        self._decided: dict[str, deque[tuple[int, int]]] = {c: deque(maxlen=recent) for c in cameras}
        self.counts: Counter[str] = Counter()
        self._decided_size = recent

    def expect(self, camera: str, position: int, part_id: int) -> None:
        fifo = self._fifo[camera]
        if fifo and position < fifo[-1][0]:
            raise ValueError(f"camera {camera}: trigger at {position} is behind {fifo[-1][0]}")
        fifo.append((position, part_id))

    def match(self, camera: str, position: int) -> Match:
        """Assign a frame taken at belt `position` from `camera`."""
        fifo = self._fifo.get(camera)
        if fifo is None:
            self.counts["unknown_camera"] += 1
            return Match(MatchKind.EXTRA, None)
        tol = self.tolerance
        missed: list[int] = []
        while fifo and fifo[0][0] + tol < position:
            pos, pid = fifo.popleft()
            missed.append(pid)
            self._decided[camera].append((pos, pid))
        self.counts["missing"] += len(missed)
        if fifo and abs(fifo[0][0] - position) <= tol:
            _, pid = fifo.popleft()
            self.counts["matched"] += 1
            return Match(MatchKind.MATCHED, pid, tuple(missed))
        for pos, pid in self._decided[camera]:
            if abs(pos - position) <= tol:
                self.counts["late"] += 1
                return Match(MatchKind.LATE, pid, tuple(missed))
        self.counts["extra"] += 1
        return Match(MatchKind.EXTRA, None, tuple(missed))

    def forget(self, part_id: int) -> list[str]:
        """Drop the part's open expectations (it was decided); returns the cameras still open."""
        open_cams: list[str] = []
        for cam, fifo in self._fifo.items():
            for item in fifo:
                if item[1] == part_id:
                    fifo.remove(item)
                    self._decided[cam].append(item)
                    open_cams.append(cam)
                    break
        return open_cams

    def add_camera(self, camera: str) -> None:
        """Start expecting frames from `camera` too (a new recipe uses it)."""
        if camera not in self._fifo:
            self._fifo[camera] = deque()
            self._decided[camera] = deque(maxlen=self._decided_size)

    def pending(self, camera: str) -> int:
        return len(self._fifo[camera])
