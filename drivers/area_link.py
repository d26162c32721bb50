"""What every PLC link shares: the error type and the encoding of the cell → PLC writes."""

from __future__ import annotations

from controller.contract import AreaLayout, Verdict, verdict_slot_bytes


class PlcLinkError(Exception):
    """The link to the PLC failed; the message says what and where."""


class AreaWriter:
    """Header and verdict-slot writes in whole bytes; a link supplies `_write(offset, data)`."""

    layout: AreaLayout

    def write_header(self, data: bytes) -> None:
        self._write(0, data)

    def write_verdict(
        self, part_id: int, verdict: Verdict, reason: int, attempt: int, sensor_count: int
    ) -> None:
        data = verdict_slot_bytes(part_id, int(verdict), attempt, int(reason), sensor_count)
        self._write(self.layout.verdict_offset(part_id), data)

    def _write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError
