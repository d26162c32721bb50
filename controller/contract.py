"""The PLC data contract: the two exchange areas (PLC → cell, cell → PLC), declared once.

Each area is a list of fields with a byte offset, a big-endian type and a meaning. The S7 link,
the S7 PLC simulator and the README's table are all built from these declarations, so the
three cannot drift. Each side owns whole bytes: no byte is written by both.

Rings (parts, verdicts, acknowledgements, dispositions) have `ring_size` slots. Part ``p``
lives in slot ``p % ring_size`` of the part, verdict and acknowledgement rings; disposition
number ``k`` (1, 2, ...) in slot ``k % ring_size`` of the disposition ring. Event rings written
by the PLC (parts, dispositions) carry a write sequence number that is bumped after the slot
is written: the newest part is in slot ``part_seq % ring_size``, the newest disposition in
slot ``dispo_seq % ring_size``. The reader detects overrun as a sequence jump larger than the
ring. Verdict slots carry their own part id and an attempt
counter, so a repeated write is idempotent and a lost one is seen as a missing echo.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

#: Bumped whenever a field's place or meaning changes. 2: verdicts echo the part's sensor_count.
CONTRACT_VERSION = 2

#: Header fields written by the PLC: (name, numpy type, meaning).
PLC_HEADER: tuple[tuple[str, str, str], ...] = (
    ("heartbeat", ">u2", "PLC heartbeat, incremented every scan; the cell watches for change"),
    ("cmd_seq", ">u2", "command sequence; a new value means a new command in cmd_code"),
    (
        "cmd_code",
        ">u2",
        "PackML CntrlCmd 1..10 (1 Reset, 2 Start, 3 Stop, 4 Hold, 5 Unhold, 8 Abort, 9 Clear)",
    ),
    ("recipe_seq", ">u2", "recipe request sequence; a new value requests recipe_number"),
    ("recipe_number", ">u2", "requested recipe number"),
    ("plc_flags", ">u2", "bit 0 conveyor running, bit 1 cell heartbeat seen by the PLC"),
    ("encoder", ">u4", "conveyor encoder, raw 32-bit counter (wraps at 2^32)"),
    (
        "part_seq",
        ">u4",
        "id of the newest part (parts registered since PLC start); its slot is part_seq % ring",
    ),
    (
        "dispo_seq",
        ">u4",
        "number of dispositions reported since PLC start; the newest is in slot dispo_seq % ring",
    ),
    ("reserved", ">u4", "reserved, 0"),
    ("reserved2", ">u4", "reserved, 0"),
)

#: One part slot (PLC → cell): a part registered at the part sensor.
PART_SLOT: tuple[tuple[str, str, str], ...] = (
    ("part_id", ">u4", "part id: 1, 2, ... since PLC start; part p is in slot p % ring"),
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
    ("part_id", ">u4", "part id; disposition number k (1, 2, ...) is in slot k % ring"),
    ("flags", ">u2", "bit 0 reject actuator fired, bit 1 confirm sensor saw the part removed"),
    ("cause", ">u2", "why the PLC decided so: see DispositionCause"),
)

#: The trigger area's header (PLC → cell, its own DB or register block; with `plc.trigger_ring`).
TRIGGER_HEADER: tuple[tuple[str, str, str], ...] = (
    ("trig_seq", ">u4", "triggers recorded since PLC start; the newest is in slot trig_seq % ring"),
    ("reserved", ">u4", "reserved, 0"),
)

#: One trigger slot: which part a camera trigger was fired for.
TRIGGER_SLOT: tuple[tuple[str, str, str], ...] = (
    ("camera", ">u2", "camera index: its place in the cell config's cameras list, from 0"),
    ("reserved", ">u2", "reserved, 0"),
    ("cam_seq", ">u4", "this camera's trigger count since PLC start (1, 2, ...), as its counter counts"),
    ("part_id", ">u4", "the part this trigger was fired for"),
    ("encoder", ">u4", "raw encoder count when the trigger was fired"),
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
    ("contract_version", ">u2", "version of this contract (CONTRACT_VERSION); a PLC checks it at start"),
    ("recipe_from_part", ">u4", "first part id judged under active_recipe (the changeover boundary)"),
)

#: One verdict slot (cell → PLC).
VERDICT_SLOT: tuple[tuple[str, str, str], ...] = (
    ("part_id", ">u4", "part id the verdict is for"),
    ("verdict", "u1", "1 PASS, 2 FAIL, 3 NO_DECISION (rejected)"),
    ("attempt", "u1", "write attempt counter, bumped on each repeat"),
    ("reason", ">u2", "reason code: see ReasonCode"),
    (
        "sensor_count",
        ">u4",
        "echo of the part's sensor_count: take a verdict only if part_id and sensor_count both match",
    ),
)


class State(IntEnum):
    """PackML StateCurrent with its wire value."""

    UNDEFINED = 0
    CLEARING = 1
    STOPPED = 2
    STARTING = 3
    IDLE = 4
    SUSPENDED = 5
    EXECUTE = 6
    STOPPING = 7
    ABORTING = 8
    ABORTED = 9
    HOLDING = 10
    HELD = 11
    UNHOLDING = 12
    SUSPENDING = 13
    UNSUSPENDING = 14
    RESETTING = 15
    COMPLETING = 16
    COMPLETE = 17


class Command(IntEnum):
    """PackML CntrlCmd with its wire value."""

    UNDEFINED = 0
    RESET = 1
    START = 2
    STOP = 3
    HOLD = 4
    UNHOLD = 5
    SUSPEND = 6
    UNSUSPEND = 7
    ABORT = 8
    CLEAR = 9
    COMPLETE = 10


class ReasonCode(IntEnum):
    """The reason code written beside a verdict (wire value). Defects are 100 + class index."""

    NONE = 0
    DEFECT = 1
    MISSING_FRAME = 10
    INFERENCE_FAILED = 11
    INFERENCE_TIMEOUT = 12
    OVERLOAD = 13
    NOT_INSPECTING = 14
    DEADLINE = 15
    BAD_FRAME = 16
    RING_OVERRUN = 17
    UNCERTAIN = 18
    PLC_DATA = 19
    FRAME_AMBIGUOUS = 20


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
    UNKNOWN_RECIPE = 7  # asked by name or file (API, OPC UA): the PLC asks by number, gets 3


class CommandResult(IntEnum):
    """Answer to a command (wire values). Code 0 and codes outside CntrlCmd 1..10 are UNKNOWN."""

    NONE = 0
    ACCEPTED = 1
    REFUSED = 2
    UNKNOWN = 3


class AlarmCode(IntEnum):
    """Alarm codes (wire values of the cell header's `alarm`, the highest active one)."""

    PLC_HEARTBEAT_LOST = 10
    PART_RING_OVERRUN = 11
    DISPO_RING_OVERRUN = 12
    PLC_LINK_LOST = 13
    ENCODER_IMPLAUSIBLE = 14
    PLC_RESTARTED = 15
    PART_DATA_INVALID = 16
    DISPO_DATA_INVALID = 17
    MISROUTE = 20
    REJECT_NOT_CONFIRMED = 21
    NO_DISPOSITION = 22
    CAMERA_LOST = 30
    FRAMES_AMBIGUOUS = 23
    TRIGGER_PAIRING = 24
    CONTROL_LOOP_ERROR = 40
    RECORDS_FAILING = 41
    IMAGES_NOT_SAVED = 42


#: Every alarm: (code, meaning, cause, what the cell does, what clears it).
ALARMS: tuple[tuple[AlarmCode, str, str, str, str], ...] = (
    (AlarmCode.PLC_HEARTBEAT_LOST, "PLC heartbeat stopped changing",
     "PLC stopped, its program halted, or the heartbeat word is not written every scan",
     "Hold; parts in flight rejected", "Reset, Clear or Unhold once the heartbeat changes again"),
    (AlarmCode.PART_RING_OVERRUN, "part ring overrun",
     "more parts registered between two cell reads than the ring holds (cell stalled)",
     "The unseen parts are recorded and rejected (NO_DECISION)", "Reset, Clear or Unhold"),
    (AlarmCode.DISPO_RING_OVERRUN, "disposition ring overrun",
     "more dispositions between two cell reads than the ring holds", "Dispositions lost are counted",
     "Reset, Clear or Unhold"),
    (AlarmCode.PLC_LINK_LOST, "PLC link lost", "network, PLC off, wrong address or DB",
     "Hold; reconnects with backoff", "Reset, Clear or Unhold once the link is back"),
    (AlarmCode.ENCODER_IMPLAUSIBLE, "encoder value implausible",
     "the encoder stepped back, or further than the belt can move (max_belt_speed_mm_s) since "
     "the value before could have been published (a stall of the cell's own reads is not a step)",
     "Hold; parts in flight rejected; positions continue from the new value",
     "Reset, Clear or Unhold"),
    (AlarmCode.PLC_RESTARTED, "PLC restarted: its sequences went back",
     "part_seq or dispo_seq decreased (PLC restart, counters reset)",
     "Hold; parts in flight rejected; every tracked part recorded without a disposition; "
     "counting resumes from the PLC's new values", "Reset, Clear or Unhold"),
    (AlarmCode.PART_DATA_INVALID, "part ring data invalid",
     "a slot not holding the part part_seq announces, or part_seq (or the trigger ring's "
     "trig_seq) jumping further than parts can have passed the sensor (min_part_pitch_mm)",
     "Hold; parts in flight rejected; an implausible jump is ignored unless it lasts 0.25 s",
     "Reset, Clear or Unhold"),
    (AlarmCode.DISPO_DATA_INVALID, "disposition data invalid",
     "a disposition for a part the cell does not track, or dispo_seq jumping implausibly",
     "Hold; parts in flight rejected", "Reset, Clear or Unhold"),
    (AlarmCode.MISROUTE, "kick does not match the verdict",
     "the PLC kicked a part the cell passed, or passed one it did not", "Counted in the record",
     "Reset, Clear or Unhold"),
    (AlarmCode.REJECT_NOT_CONFIRMED, "reject not confirmed",
     "the confirm sensor did not see a kicked part removed", "Hold if the recipe says so",
     "Reset, Clear or Unhold"),
    (AlarmCode.NO_DISPOSITION, "no disposition from the PLC",
     "a part went far past the confirm sensor without a disposition", "Recorded without one",
     "Reset, Clear or Unhold"),
    (AlarmCode.FRAMES_AMBIGUOUS, "frames cannot be paired with parts",
     "over 2 % of the last 200 frames lay within the position uncertainty of two parts' triggers: "
     "the PLC publishes its encoder too rarely for the part pitch (the text gives the measured "
     "PLC scan, belt speed and uncertainty)",
     "Those parts are rejected (NO_DECISION); the line runs on",
     "Reset, Clear or Unhold (raised again while it lasts)"),
    (AlarmCode.TRIGGER_PAIRING, "frames do not pair with the trigger ring",
     "over 2 % of the last 200 frames found no trigger record for their counter, or none that fits "
     "their position: the PLC does not publish its triggers (trig_seq stays), or pulses are lost "
     "or added on the trigger wiring",
     "Those frames are dropped, so their parts are rejected (NO_DECISION); each camera locks its "
     "counter again on the next frame that fits exactly one trigger",
     "Reset, Clear or Unhold (raised again while it lasts)"),
    (AlarmCode.CAMERA_LOST, "camera gone", "unplugged, powered off, network",
     "Its views are missing: parts rejected (NO_DECISION); the driver reopens it",
     "Reset, Clear or Unhold once it is back"),
    (AlarmCode.CONTROL_LOOP_ERROR, "control loop error",
     "an unexpected error while handling PLC data (a bug): the message names it",
     "Hold; parts in flight rejected", "Reset, Clear or Unhold"),
    (AlarmCode.RECORDS_FAILING, "records cannot be written",
     "the record database's disk is full or failing: the message says why",
     "Hold; parts in flight rejected (a traceability cell passes nothing it cannot record); "
     "the rows are kept and retried", "Reset, Clear or Unhold once they are written again"),
    (AlarmCode.IMAGES_NOT_SAVED, "images not saved",
     "disk full (the oldest images were deleted first to make room), folder not writable, or no "
     "file handles", "Records are kept, each saying why its images are missing",
     "Reset, Clear or Unhold (raised again while it lasts)"),
)  # fmt: skip


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
    trig_dtype: np.dtype[np.void]

    @property
    def plc_size(self) -> int:
        return int(self.plc_dtype.itemsize)

    @property
    def cell_size(self) -> int:
        return int(self.cell_dtype.itemsize)

    @property
    def trig_size(self) -> int:
        return int(self.trig_dtype.itemsize)

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
        trig_dtype=np.dtype(
            [("header", _dtype(TRIGGER_HEADER)), ("slots", _dtype(TRIGGER_SLOT), (ring_size,))]
        ),
    )


_CELL_HEADER_DTYPE = _dtype(CELL_HEADER)
_VERDICT_DTYPE = _dtype(VERDICT_SLOT)


def _pack(dtype: np.dtype[np.void], values: dict[str, int]) -> bytes:
    rec = np.zeros((), dtype=dtype)
    unknown = sorted(set(values) - set(dtype.names or ()))
    if unknown:
        raise ValueError(f"no such field: {', '.join(unknown)}")
    for name, value in values.items():
        rec[name] = value & ((1 << (8 * dtype.fields[name][0].itemsize)) - 1)  # type: ignore[index]
    return rec.tobytes()


def cell_header_bytes(**values: int) -> bytes:
    """The cell → PLC header as the PLC reads it; fields not given are 0. Unknown names raise."""
    return _pack(_CELL_HEADER_DTYPE, values)


def verdict_slot_bytes(part_id: int, verdict: int, attempt: int, reason: int, sensor_count: int) -> bytes:
    """One verdict slot as the PLC reads it (ids and counters wrap to their field's width)."""
    values = {"part_id": part_id, "verdict": verdict, "attempt": attempt, "reason": reason}
    return _pack(_VERDICT_DTYPE, {**values, "sensor_count": sensor_count})


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
    emit("PLC → cell (triggers)", 0, "", TRIGGER_HEADER)
    trig_fields = layout.trig_dtype.fields
    assert trig_fields is not None
    emit("PLC → cell (triggers)", trig_fields["slots"][1], f"slots[0..{ring_size - 1}].", TRIGGER_SLOT)
    emit("cell → PLC", 0, "", CELL_HEADER)
    emit("cell → PLC", layout.cell_header_size, f"verdicts[0..{ring_size - 1}].", VERDICT_SLOT)
    return rows


#: What a code means where its name alone does not say it. (Keyed by enum and value: IntEnum
#: members of different enums with the same value are equal.)
_NOTES: dict[tuple[type, int], str] = {
    (type(k), int(k)): v
    for k, v in {
        ReasonCode.NOT_INSPECTING: "part entered outside Execute",
        ReasonCode.DEADLINE: "a view not inspected by the decision point",
        ReasonCode.RING_OVERRUN: "a part the cell could not read (ring overrun, link down)",
        ReasonCode.UNCERTAIN: "the model was not confident",
        ReasonCode.PLC_DATA: "PLC data the cell could not trust (alarms 14-17, 40)",
        ReasonCode.FRAME_AMBIGUOUS: "a frame that could belong to more than one part (alarm 23)",
        RecipeResult.BUSY: "another changeover is running",
        RecipeResult.MODEL_FAILED: "the model failed to load",
        RecipeResult.NOT_SAFE: "not in a safe state",
        RecipeResult.UNKNOWN_RECIPE: "no such name or file in the recipe folder; asked by name: API, OPC UA",
        DispositionCause.NO_VERDICT: "no verdict by the deadline",
        CommandResult.REFUSED: "refused in this state",
        CommandResult.UNKNOWN: "not a CntrlCmd 1..10 (0 included)",
    }.items()
}


def _codes(enum: type[IntEnum], skip_zero: bool = False) -> str:
    parts = []
    for m in enum:
        if skip_zero and m.value == 0:
            continue
        name = (m.name or "").lower().replace("_", " ")
        note = _NOTES.get((enum, int(m)))
        parts.append(f"{m.value} {name}" + (f" ({note})" if note else ""))
    return ", ".join(parts)


def contract_markdown(ring_size: int = 16) -> str:
    """The contract as the README shows it: both areas, every code, every alarm."""
    lines = ["| area | byte | field | S7 type | meaning |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {o} | `{n}` | {t} | {m} |" for a, o, n, t, m in contract_table(ring_size)]
    lines += [
        "",
        "Codes (wire values):",
        "",
        f"- Verdict: {_codes(Verdict, True)}.",
        f"- Reason: {_codes(ReasonCode)}.",
        f"- Recipe result: {_codes(RecipeResult, True)}.",
        f"- Disposition cause: {_codes(DispositionCause)}.",
        f"- Command result: {_codes(CommandResult, True)}.",
        f"- PackML StateCurrent: {_codes(State, True)}.",
        f"- PackML CntrlCmd: {_codes(Command, True)}.",
        "",
        "Alarms (`alarm` in the cell's header is the highest active code; each is also logged,",
        "recorded in the `alarms` table and shown by `cellctl status`):",
        "",
        "| code | alarm | cause | what the cell does | cleared by |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {int(c)} | {m} | {why} | {does} | {clears} |" for c, m, why, does, clears in ALARMS]
    return "\n".join(lines)
