"""The PLC data contract: the two exchange areas (PLC → cell, cell → PLC), declared once.

Each area is a list of fields with a byte offset, a big-endian type and a meaning. The S7 link,
the S7 PLC simulator and the README's table are all built from these declarations, so the
three cannot drift. Each side owns whole bytes: no byte is written by both.

Rings (parts, verdicts, acknowledgements, dispositions) have `ring_size` slots; a part's slot
is ``part_id % ring_size``. Event rings written by the PLC (parts, dispositions) carry a write
sequence number that is bumped after the slot is written; the reader detects overrun as a
sequence jump larger than the ring. Verdict slots carry their own part id and an attempt
counter, so a repeated write is idempotent and a lost one is seen as a missing echo.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

#: Header fields written by the PLC: (name, numpy type, meaning).
PLC_HEADER: tuple[tuple[str, str, str], ...] = (
    ("heartbeat", ">u2", "PLC heartbeat, incremented every scan; the cell watches for change"),
    ("cmd_seq", ">u2", "command sequence; a new value means a new command in cmd_code"),
    ("cmd_code", ">u2", "PackML CntrlCmd (1 Reset, 2 Start, 3 Stop, 4 Hold, 5 Unhold, 8 Abort, 9 Clear)"),
    ("recipe_seq", ">u2", "recipe request sequence; a new value requests recipe_number"),
    ("recipe_number", ">u2", "requested recipe number"),
    ("plc_flags", ">u2", "bit 0 conveyor running, bit 1 cell heartbeat seen by the PLC"),
    ("encoder", ">u4", "conveyor encoder, raw 32-bit counter (wraps at 2^32)"),
    ("part_seq", ">u4", "number of parts registered so far; the newest is in slot (part_seq-1) % ring"),
    ("dispo_seq", ">u4", "number of dispositions reported so far"),
    ("reserved", ">u4", "reserved, 0"),
    ("reserved2", ">u4", "reserved, 0"),
)

#: One part slot (PLC → cell): a part registered at the part sensor.
PART_SLOT: tuple[tuple[str, str, str], ...] = (
    ("part_id", ">u4", "part id (sequence number, starts at 1)"),
    ("sensor_count", ">u4", "raw encoder count when the part was registered at the sensor"),
)

#: One verdict acknowledgement slot (PLC → cell): the PLC echoes a verdict it accepted.
ACK_SLOT: tuple[tuple[str, str, str], ...] = (
    ("part_id", ">u4", "echo of the verdict slot's part id"),
    ("verdict", "u1", "echo of the verdict"),
    ("attempt", "u1", "echo of the attempt counter"),
    ("status", ">u2", "1 accepted in time, 2 refused: arrived after the part's deadline"),
)

#: One disposition slot (PLC → cell): what happened to the part at the reject station.
DISPO_SLOT: tuple[tuple[str, str, str], ...] = (
    ("part_id", ">u4", "part id"),
    ("flags", ">u2", "bit 0 reject actuator fired, bit 1 confirm sensor saw the part removed"),
    ("cause", ">u2", "why the PLC decided so: see DispositionCause"),
)

#: Header fields written by the cell.
CELL_HEADER: tuple[tuple[str, str, str], ...] = (
    ("heartbeat", ">u2", "cell heartbeat, incremented every I/O cycle; the PLC watches for change"),
    ("state", ">u2", "PackML StateCurrent (0-17)"),
    ("cmd_ack_seq", ">u2", "echo of the last cmd_seq handled"),
    ("cmd_result", ">u2", "result of that command: see CommandResult"),
    ("recipe_ack_seq", ">u2", "echo of the last recipe_seq handled"),
    ("recipe_result", ">u2", "result of that recipe request"),
    ("alarm", ">u2", "highest active alarm code, 0 for none"),
    ("cell_flags", ">u2", "bit 0 inspecting (Execute)"),
    ("active_recipe", ">u2", "number of the recipe that judges parts from recipe_from_part on"),
    ("reserved", ">u2", "reserved, 0"),
    ("recipe_from_part", ">u4", "first part id judged under active_recipe (the changeover boundary)"),
)

#: One verdict slot (cell → PLC).
VERDICT_SLOT: tuple[tuple[str, str, str], ...] = (
    ("part_id", ">u4", "part id the verdict is for"),
    ("verdict", "u1", "1 PASS, 2 FAIL, 3 NO_DECISION (rejected)"),
    ("attempt", "u1", "write attempt counter, bumped on each repeat"),
    ("reason", ">u2", "reason code: see ReasonCode"),
)


class Verdict(IntEnum):
    """A part's verdict, with the wire value the PLC sees."""

    NONE = 0
    PASS = 1
    FAIL = 2
    NO_DECISION = 3


class AckStatus(IntEnum):
    NONE = 0
    ACCEPTED = 1
    LATE = 2


class DispositionCause(IntEnum):
    """Why the PLC kicked or passed a part (wire values)."""

    PASSED = 0
    VERDICT_REJECT = 1
    NO_VERDICT = 2
    CELL_HEARTBEAT_LOST = 3
    LATE_VERDICT = 4


class RecipeResult(IntEnum):
    """Answer to a recipe request (wire values)."""

    NONE = 0
    ACTIVE = 1
    INVALID = 2
    UNKNOWN_NUMBER = 3
    BUSY = 4
    MODEL_FAILED = 5
    NOT_SAFE = 6


class CommandResult(IntEnum):
    NONE = 0
    ACCEPTED = 1
    REFUSED = 2
    UNKNOWN = 3


DISPO_KICKED = 0x1
DISPO_CONFIRMED_REMOVED = 0x2
PLC_FLAG_RUNNING = 0x1
PLC_FLAG_CELL_HEARTBEAT_OK = 0x2
CELL_FLAG_INSPECTING = 0x1


def _dtype(fields: tuple[tuple[str, str, str], ...]) -> np.dtype[np.void]:
    return np.dtype([(name, typ) for name, typ, _ in fields])


@dataclass(frozen=True)
class AreaLayout:
    """Byte layout of both exchange areas for one ring size; numpy dtypes view the raw bytes."""

    ring_size: int
    plc_dtype: np.dtype[np.void]
    cell_dtype: np.dtype[np.void]
    cell_header_size: int
    verdict_slot_size: int

    @property
    def plc_size(self) -> int:
        return int(self.plc_dtype.itemsize)

    @property
    def cell_size(self) -> int:
        return int(self.cell_dtype.itemsize)

    def verdict_offset(self, part_id: int) -> int:
        """Byte offset of the verdict slot of `part_id` in the cell → PLC area."""
        return self.cell_header_size + (part_id % self.ring_size) * self.verdict_slot_size


def area_layout(ring_size: int) -> AreaLayout:
    """Build the layout for `ring_size` slots per ring; sizes are checked against the S7 PDU."""
    if not 4 <= ring_size <= 32:
        raise ValueError(f"ring_size must be 4..32, got {ring_size}")
    plc = np.dtype(
        [
            ("header", _dtype(PLC_HEADER)),
            ("parts", _dtype(PART_SLOT), (ring_size,)),
            ("acks", _dtype(ACK_SLOT), (ring_size,)),
            ("dispos", _dtype(DISPO_SLOT), (ring_size,)),
        ]
    )
    cell = np.dtype([("header", _dtype(CELL_HEADER)), ("verdicts", _dtype(VERDICT_SLOT), (ring_size,))])
    # One S7 read must carry the whole PLC → cell area: PDU 480 leaves 462 data bytes.
    if plc.itemsize > 462:
        raise ValueError(f"ring_size {ring_size} makes the PLC area {plc.itemsize} B, over one S7 PDU")
    return AreaLayout(
        ring_size=ring_size,
        plc_dtype=plc,
        cell_dtype=cell,
        cell_header_size=_dtype(CELL_HEADER).itemsize,
        verdict_slot_size=_dtype(VERDICT_SLOT).itemsize,
    )


def contract_table(ring_size: int = 16) -> list[tuple[str, int, str, str, str]]:
    """Rows (area, byte offset, field, type, meaning) for documentation."""
    layout = area_layout(ring_size)
    rows: list[tuple[str, int, str, str, str]] = []

    def emit(area: str, base: int, prefix: str, fields: tuple[tuple[str, str, str], ...]) -> None:
        dt = _dtype(fields)
        for name, typ, meaning in fields:
            off = dt.fields[name][1]  # type: ignore[index]
            s7 = {">u2": "UINT", ">u4": "UDINT", "u1": "USINT"}[typ]
            rows.append((area, base + off, prefix + name, s7, meaning))

    emit("PLC → cell", 0, "", PLC_HEADER)
    plc_fields = layout.plc_dtype.fields
    assert plc_fields is not None
    emit("PLC → cell", plc_fields["parts"][1], f"parts[0..{ring_size - 1}].", PART_SLOT)
    emit("PLC → cell", plc_fields["acks"][1], f"acks[0..{ring_size - 1}].", ACK_SLOT)
    emit("PLC → cell", plc_fields["dispos"][1], f"dispos[0..{ring_size - 1}].", DISPO_SLOT)
    emit("cell → PLC", 0, "", CELL_HEADER)
    emit("cell → PLC", layout.cell_header_size, f"verdicts[0..{ring_size - 1}].", VERDICT_SLOT)
    return rows
