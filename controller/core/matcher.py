"""Assigns camera frames to parts by encoder position: one FIFO per camera, a tolerance window.

A frame's position is where the belt was at its trigger instant. Expected triggers older than
the window are missing; a frame matching no expectation is extra, or late when it matches a
part already decided. Nothing is guessed: every mismatch is counted.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum


class MatchKind(Enum):
    MATCHED = "matched"
    EXTRA = "extra"
    LATE = "late"
    AMBIGUOUS = "ambiguous"  # more than one part's trigger within the window: not guessed


@dataclass(frozen=True, slots=True)
class Match:
    kind: MatchKind
    part_id: int | None
    missed: tuple[int, ...] = ()
    candidates: tuple[int, ...] = ()  # AMBIGUOUS: the parts it could be


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
            # Two parts registered out of belt order (the PLC's sensor counts jitter): keep
            # the FIFO sorted by position, which is the order the triggers will come in.
            i = len(fifo)
            while i > 0 and fifo[i - 1][0] > position:
                i -= 1
            fifo.insert(i, (position, part_id))
            return
        fifo.append((position, part_id))

    def match(self, camera: str, position: int, uncertainty: float = 0.0) -> Match:
        """Assign a frame taken at belt `position` (± `uncertainty` counts) from `camera`.

        It pairs only when exactly one expected trigger lies within tolerance + uncertainty;
        with two or more it is AMBIGUOUS and those parts' views of this camera are given up.
        """
        fifo = self._fifo.get(camera)
        if fifo is None:
            self.counts["unknown_camera"] += 1
            return Match(MatchKind.EXTRA, None)
        tol = self.tolerance + int(uncertainty)
        missed: list[int] = []
        while fifo and fifo[0][0] + tol < position:
            pos, pid = fifo.popleft()
            missed.append(pid)
            self._decided[camera].append((pos, pid))
        self.counts["missing"] += len(missed)
        near = [item for item in itertools.islice(fifo, 4) if abs(item[0] - position) <= tol]
        done = [item for item in self._decided[camera] if abs(item[0] - position) <= tol]
        if near and len(near) + len(done) > 1:
            # Triggers of two parts (one maybe already served) lie within the window: this frame
            # could be either's. Not guessed: the open ones are given up.
            for item in near:
                fifo.remove(item)
                self._decided[camera].append(item)
            self.counts["ambiguous"] += 1
            return Match(MatchKind.AMBIGUOUS, None, tuple(missed), tuple(pid for _, pid in near))
        if near:
            fifo.remove(near[0])
            self._decided[camera].append(near[0])
            self.counts["matched"] += 1
            return Match(MatchKind.MATCHED, near[0][1], tuple(missed))
        if done:
            self.counts["late"] += 1
            return Match(MatchKind.LATE, done[-1][1], tuple(missed))
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

    def near(self, camera: str, position: int, window: float) -> list[int]:
        """Parts whose trigger on `camera` (expected or served) lies within `window` of `position`."""
        items = [*self._fifo.get(camera, ()), *self._decided.get(camera, ())]
        return [pid for pos, pid in items if abs(pos - position) <= window]

    def consume(self, camera: str, part_id: int) -> bool:
        """The part's frame from `camera` was paired another way (trigger ring): served."""
        fifo = self._fifo.get(camera)
        for item in fifo or ():
            if item[1] == part_id:
                fifo.remove(item)  # type: ignore[union-attr]
                self._decided[camera].append(item)
                return True
        return False

    def add_camera(self, camera: str) -> None:
        """Start expecting frames from `camera` too (a new recipe uses it)."""
        if camera not in self._fifo:
            self._fifo[camera] = deque()
            self._decided[camera] = deque(maxlen=self._decided_size)

    def pending(self, camera: str) -> int:
        return len(self._fifo[camera])
