"""Write sequences of the PLC's event rings: plausible advances are taken, anything else is caught.

The PLC bumps a 32-bit write sequence after it writes a ring slot (`part_seq`, `dispo_seq`).
A sequence that moves further than the physics allows, or goes back, is not followed: it is
reported at once, ignored while it lasts, and taken only once it has held for `LASTING_S`
(a PLC restart, a counter preset). A glitch of a few scans therefore never invents parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from controller.core.encoder import signed_diff


class SeqEvent(Enum):
    LEARNED = "learned"  # first read: the baseline, nothing is replayed
    SAME = "same"
    ADVANCED = "advanced"  # new entries first..last
    JUMP = "jump"  # moved further than plausible: ignored for now
    BACK = "back"  # went back: ignored for now
    ADOPTED = "adopted"  # a jump that lasted: entries first..last are new, the gap before unknown
    RESTARTED = "restarted"  # a step back that lasted: ids are reused (new epoch); first..last new


@dataclass(frozen=True, slots=True)
class SeqStep:
    event: SeqEvent
    first: int = 0
    last: int = 0
    #: Reads this odd value has held (1 on the first sighting, when the caller alarms).
    reads: int = 0


class SequenceWatch:
    """One PLC write sequence. `value` is the last one taken, unwrapped past 2^32."""

    #: A PLC restart takes seconds; a glitching value rarely holds this long.
    LASTING_S = 0.25

    def __init__(self) -> None:
        self.value: int | None = None
        self._odd: int | None = None
        self._odd_first = 0
        self._odd_reads = 0
        self._odd_since = 0.0

    def relearn(self) -> None:
        """Take the next read as the baseline, replaying nothing."""
        self.value, self._odd, self._odd_reads = None, None, 0

    def follow_restart(self, raw: int) -> SeqStep:
        """The other sequence showed a PLC restart: this one counts from 0 too if it went back,
        else it goes on from `raw` (nothing replayed)."""
        behind = self.value is not None and signed_diff(raw, self.value & 0xFFFFFFFF) < 0
        self._odd, self._odd_reads = None, 0
        self.value = raw
        return SeqStep(SeqEvent.RESTARTED, 1, raw) if behind else SeqStep(SeqEvent.LEARNED, raw + 1, raw)

    def restart_at_zero(self) -> None:
        """The PLC restarted: its entries are numbered from 1 again."""
        self.value, self._odd, self._odd_reads = 0, None, 0

    def step(self, raw: int, plausible: int, now: float) -> SeqStep:
        """Feed one read of the sequence taken at `now`; at most `plausible` new entries are believed."""
        if self.value is None:
            self.value = raw
            return SeqStep(SeqEvent.LEARNED, raw + 1, raw)
        d = signed_diff(raw, self.value & 0xFFFFFFFF)
        if 0 <= d <= plausible:
            self._odd, self._odd_reads = None, 0
            first = self.value + 1
            self.value += d
            return SeqStep(SeqEvent.ADVANCED if d else SeqEvent.SAME, first, self.value)
        # An odd run is one the PLC could be counting on its own: each read a plausible advance
        # on the one before (a restarted PLC keeps registering parts while the cell waits).
        if self._odd is not None and 0 <= signed_diff(raw, self._odd) <= plausible:
            self._odd, self._odd_reads = raw, self._odd_reads + 1
        else:
            self._odd, self._odd_first, self._odd_reads, self._odd_since = raw, raw, 1, now
        if now - self._odd_since < self.LASTING_S:
            return SeqStep(SeqEvent.BACK if d < 0 else SeqEvent.JUMP, reads=self._odd_reads)
        self._odd, self._odd_reads = None, 0
        # Entries from the first odd value on were registered while the cell waited: new ones.
        since_first = signed_diff(raw, self._odd_first)
        if d < 0:  # went back and stayed: the PLC counts again (from 0 after a restart)
            self.value = raw
            first = 1 if raw <= plausible else raw - since_first
            return SeqStep(SeqEvent.RESTARTED, first, raw)
        self.value += d
        return SeqStep(SeqEvent.ADOPTED, self.value - since_first, self.value)
