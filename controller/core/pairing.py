"""Exact frame-to-part pairing from the PLC's trigger ring and each camera's trigger counter.

The PLC records every trigger it fires: the camera, that camera's trigger count, the part it
was for and the encoder count. A camera counts the triggers it receives, so its frame counter
minus the PLC's count is a constant as long as no pulse is lost or added on the wire. That
offset is locked on a frame whose position (from the encoder history) has exactly one unused
trigger of its camera within the uncertainty, and checked on every frame after: a record
outside the frame's uncertainty breaks the lock (counted) and the frame tries to lock again.
Frames usually arrive before the PLC has published their trigger: they wait (`PENDING`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from controller.core.counters import Count, Counters
from controller.core.plcseq import SeqEvent, SeqStep, SequenceWatch


@dataclass(slots=True)
class TriggerRecord:
    part_id: int
    position: int
    used: bool = False


class PairKind(Enum):
    PAIRED = "paired"
    PENDING = "pending"  # its trigger is not published yet: ask again after the next PLC read
    AMBIGUOUS = "ambiguous"  # not locked, and two triggers fit: not guessed
    UNPAIRED = "unpaired"


@dataclass(frozen=True, slots=True)
class Pairing:
    kind: PairKind
    part_id: int | None = None


class TriggerPairing:
    """Trigger records per camera (cell config order) and each camera's counter offset."""

    def __init__(
        self, cameras: tuple[str, ...], ring_size: int, keep: int = 256, counters: Counters | None = None
    ) -> None:
        self.cameras = cameras
        self.ring_size = ring_size
        self._keep = keep
        self._records: dict[str, dict[int, TriggerRecord]] = {c: {} for c in cameras}
        self._newest: dict[str, int] = dict.fromkeys(cameras, 0)
        self.offsets: dict[str, int | None] = dict.fromkeys(cameras)
        self.seq = SequenceWatch()
        self.counters = counters if counters is not None else Counters()

    def reset(self) -> None:
        """Forget every record and lock (PLC restart, encoder fault): pairing starts over."""
        for cam in self.cameras:
            self._records[cam].clear()
            self._newest[cam] = 0
            self.offsets[cam] = None
        self.seq.relearn()

    def unlock(self, camera: str) -> None:
        """A locked camera's frame found no trigger record in time: the count may be off (a
        pulse added on the wire, or a lock taken on the wrong record), so lock again."""
        if self.offsets.get(camera) is not None:
            self.offsets[camera] = None
            self.counters.trigger_resyncs[camera] += 1

    def ingest(self, area: np.void, unwrap: Callable[[int], int], plausible: int, now: float) -> SeqStep:
        """Take the trigger records published since the last read."""
        step = self.seq.step(int(area["header"]["trig_seq"]), plausible, now)
        if step.event not in (SeqEvent.ADVANCED, SeqEvent.RESTARTED) or step.last < step.first:
            return step
        n = self.ring_size
        first = max(step.first, step.last - n + 1)
        if first > step.first:
            self.counters.add(Count.TRIGGER_RING_OVERRUN, first - step.first)
        slots = area["slots"]
        for k in range(first, step.last + 1):
            slot = slots[k % n]
            index = int(slot["camera"])
            if index >= len(self.cameras):
                self.counters.add(Count.TRIGGER_BAD_CAMERA)
                continue
            cam = self.cameras[index]
            records = self._records[cam]
            cam_seq = int(slot["cam_seq"])
            records[cam_seq] = TriggerRecord(int(slot["part_id"]), unwrap(int(slot["encoder"])))
            self._newest[cam] = max(self._newest[cam], cam_seq)
            if len(records) > self._keep:
                records.pop(next(iter(records)))
        return step

    def pair(self, camera: str, counter: int, position: int | None, band: float) -> Pairing:
        """The part a frame belongs to, by its camera's trigger counter (see the module doc)."""
        records = self._records.get(camera)
        if records is None:
            return Pairing(PairKind.UNPAIRED)
        offset = self.offsets[camera]
        if offset is not None:
            rec = records.get(counter - offset)
            if rec is None and counter - offset > self._newest[camera]:
                return Pairing(PairKind.PENDING)
            if (
                rec is not None
                and not rec.used
                and (position is None or abs(rec.position - position) <= band)
            ):
                rec.used = True
                return Pairing(PairKind.PAIRED, rec.part_id)
            # A pulse lost or added on the wire, a camera reopened, a record gone: lock again.
            self.counters.trigger_resyncs[camera] += 1
            self.offsets[camera] = None
        if position is None:
            return Pairing(PairKind.PENDING)
        fits = [(s, r) for s, r in records.items() if not r.used and abs(r.position - position) <= band]
        if len(fits) > 1:
            return Pairing(PairKind.AMBIGUOUS)
        if not fits:
            return Pairing(PairKind.PENDING)
        cam_seq, rec = fits[0]
        self.offsets[camera] = counter - cam_seq
        rec.used = True
        return Pairing(PairKind.PAIRED, rec.part_id)
