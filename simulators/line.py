"""The simulated line: conveyor with encoder, part sensor, camera stations, reject and confirm.

`PlcScan` is the PLC program, independent of the field bus: every scan it moves the belt,
registers parts at the sensor, fires camera triggers at their stations, takes the verdicts
the cell wrote, latches them at the deadline, fires the reject at the reject station (any part
without an accepted verdict is rejected) and reports each disposition at the confirm sensor.
It works on numpy views of the two exchange areas, so an S7 or a Modbus server can host it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import ClassVar

import numpy as np

from controller.contract import (
    CELL_FLAG_INSPECTING,
    DISPO_CONFIRMED_REMOVED,
    DISPO_KICKED,
    PLC_FLAG_CELL_HEARTBEAT_OK,
    PLC_FLAG_RUNNING,
    AckStatus,
    AreaLayout,
    DispositionCause,
    Verdict,
)
from simulators.parts import PartGenerator, PartTruth

WRAP = 1 << 32


@dataclass(frozen=True)
class LineConfig:
    """Geometry (mm, from the cell config) and behaviour of the simulated line."""

    camera_offsets_mm: tuple[float, ...] = (150.0, 200.0, 250.0)
    deadline_mm: float = 450.0
    reject_mm: float = 500.0
    confirm_mm: float = 550.0
    counts_per_mm: float = 10.0
    belt_speed_mm_s: float = 1000.0
    parts_per_min: float = 1200.0
    spacing_jitter: float = 0.15
    sensor_debounce_mm: float = 5.0
    encoder_start: int = WRAP - 150_000
    parts: int = 0
    seed: int = 1
    defect_rate: float = 0.3
    scan_s: float = 0.001
    scan_jitter_s: float = 0.0
    cell_heartbeat_timeout_s: float = 0.5
    drop_verdict_writes: float = 0.0
    drop_frames: float = 0.0
    extra_triggers: float = 0.0
    kick_fail_rate: float = 0.0
    #: The PLC's own trigger table: recipe number → camera offsets (mm), for changeovers.
    recipe_offsets_mm: tuple[tuple[int, tuple[float, ...]], ...] = ()

    @property
    def counts_per_s(self) -> float:
        return self.belt_speed_mm_s * self.counts_per_mm

    def counts(self, mm: float) -> int:
        return round(mm * self.counts_per_mm)

    @property
    def pitch_mm(self) -> float:
        return self.belt_speed_mm_s * 60.0 / self.parts_per_min


@dataclass(frozen=True, slots=True)
class Trigger:
    """A camera trigger: the hardware line pulse, with the part that is in front of the lens."""

    camera: int
    t: float
    truth: PartTruth | None


@dataclass(frozen=True, slots=True)
class CameraFault:
    """A camera misbehaving from now until `until` (monotonic s): see `simulators.faults`."""

    camera: int
    kind: str  # drop, delay, corrupt, freeze
    until: float
    value: float = 0.0


def receive_triggers(conn: Connection) -> Iterator[Trigger | CameraFault]:
    """The line PLC's triggers (and injected camera faults) from its pipe, until it sends None
    or the pipe closes."""
    while True:
        try:
            trig: Trigger | CameraFault | None = conn.recv()
        except (EOFError, OSError):
            return
        if trig is None:
            return
        yield trig


@dataclass(slots=True)
class Outcome:
    """What physically happened to one part (for the scorer).

    `epoch` counts the PLC's restarts before the part entered (part ids start again at 1 after
    each); `sensor_count` is the raw count written to its part slot; `restart_reject`: the part was
    in the cell when the PLC restarted, before the reject station, and the restarted PLC, which no
    longer held its verdict, rejected it.
    """

    part_id: int
    defective: bool
    defects: tuple[str, ...]
    kicked: bool
    removed: bool
    cause: int
    verdict: int
    epoch: int = 0
    sensor_count: int = 0
    restart_reject: bool = False


@dataclass(slots=True)
class _Part:
    truth: PartTruth
    travel: int
    offsets: list[int]
    sensor_count: int = 0  # raw, as written to its part slot
    next_cam: int = 0
    verdict: int = 0
    accepted_attempt: int = 0
    latched: bool = False
    kick: bool = False
    cause: int = DispositionCause.PASSED
    kicked: bool = False
    removed: bool = False
    seen: set[tuple[int, int]] = field(default_factory=set)
    epoch: int = 0
    restart_reject: bool = False


class PlcScan:
    """The PLC program of the simulated line. `step(now)` is one scan."""

    def __init__(
        self,
        cfg: LineConfig,
        layout: AreaLayout,
        plc_area: np.ndarray,
        cell_area: np.ndarray,
        on_trigger: Callable[[Trigger], None],
        t0: float,
        trig_area: np.ndarray | None = None,
    ) -> None:
        self.cfg = cfg
        self.layout = layout
        self.plc = plc_area  # this PLC writes it
        self.cell = cell_area  # the cell writes it
        self.trig = trig_area  # this PLC writes it: the trigger it fired for each part, per camera
        self._cam_seq = [0] * len(cfg.camera_offsets_mm)
        self.on_trigger = on_trigger
        self.t0 = t0
        self.rng = np.random.default_rng([cfg.seed, 7])
        self.parts_gen = PartGenerator(cfg.seed, len(cfg.camera_offsets_mm), cfg.defect_rate)
        self.cam_offsets = [cfg.counts(mm) for mm in cfg.camera_offsets_mm]
        self._recipe_offsets = list(self.cam_offsets)

        self.deadline = cfg.counts(cfg.deadline_mm)
        self.reject = cfg.counts(cfg.reject_mm)
        self.confirm = cfg.counts(cfg.confirm_mm)
        self.queue: deque[_Part] = deque()
        self.by_id: dict[int, _Part] = {}
        self.outcomes: list[Outcome] = []
        self.registered = 0
        self.feeding = True
        self.running = True
        self._next_travel = cfg.counts(cfg.pitch_mm)
        self._travel = 0
        self._t_last = t0
        self._cell_hb = -1
        self._cell_hb_t = t0
        self.cell_heartbeat_ok = False
        self._seq = {"command": 0, "recipe": 0}
        self._spurious: list[tuple[int, int]] = []
        self.dropped_writes = 0
        self._next_id = 1  # part ids since the PLC's last start; `registered` counts all parts
        self._encoder_offset = 0
        self._part_seq_glitch: tuple[int, int] | None = None  # (jump, scans left)
        self._bad_slot_id: int | None = None
        self.epoch = 0  # restarts so far: part ids start again at 1 after each
        self._stop_scans = 0  # scans left in STOP before a cold start
        self._stopped_at: float | None = None

    #: A restart is STOP, then a cold start. In STOP the PLC scans nothing (outputs off: the belt
    #: stands still) and its memory can still be read, as a real CPU's can.
    RESTART_STOP_S = 0.1

    # -- faults a real PLC shows, injected on purpose (tests, `cellctl demo`)
    FAULTS = ("encoder_step", "restart", "part_seq_glitch", "bad_part_slot", "unknown_disposition")

    def inject(self, fault: str, value: int = 0) -> None:
        """Make this PLC misbehave once: see FAULTS. Applied from the next scan on."""
        if fault == "encoder_step":  # the encoder value jumps by `value` counts (card swap, preset)
            self._encoder_offset += value
        elif fault == "restart":  # STOP, then a cold start: memory and counters from 0
            self._stop_scans = max(1, round(self.RESTART_STOP_S / self.cfg.scan_s))
        elif fault == "part_seq_glitch":  # part_seq reads `value` higher for 10 ms, then right again
            self._part_seq_glitch = (value, max(1, round(0.01 / self.cfg.scan_s)))
        elif fault == "bad_part_slot":  # the next part's slot carries id `value` instead of its own
            self._bad_slot_id = value
        elif fault == "unknown_disposition":  # a disposition for part `value`, which never existed
            self._report_disposition(value, kicked=True, removed=True, cause=DispositionCause.VERDICT_REJECT)
        else:
            raise ValueError(f"unknown PLC fault {fault!r} (known: {', '.join(self.FAULTS)})")

    def _stopped(self, now: float) -> bool:
        """One scan in STOP (True), or the cold start that ends it (False: scan on)."""
        if not self._stop_scans:
            return False
        if self._stopped_at is None:
            self._stopped_at = now
        self._stop_scans -= 1
        if self._stop_scans:
            return True
        self.t0 += now - self._stopped_at  # the belt stood still in STOP
        self._stopped_at = None
        self._restart()
        return False

    def _restart(self) -> None:
        # The parts on the belt are no longer tracked: each is reported now (nobody will later).
        # One that had not reached the reject station is rejected there: the restarted PLC holds
        # no verdict for it. One past it was kicked or passed as its latched verdict said.
        for part in self.queue:
            if self._travel - part.travel < self.reject:
                part.kick = part.kicked = part.restart_reject = True
                part.removed = not (self.cfg.kick_fail_rate and self.rng.random() < self.cfg.kick_fail_rate)
                part.cause = DispositionCause.NO_VERDICT
            self.outcomes.append(self._outcome(part))
        self.queue.clear()
        self.by_id.clear()
        for area in (self.plc, self.trig) if self.trig is not None else (self.plc,):
            for name in area.dtype.names or ():
                area[name] = 0
        self._cam_seq = [0] * len(self._cam_seq)
        self._encoder_offset = -(self.cfg.encoder_start + self._travel)
        self._next_id = 1
        self._seq = {"command": 0, "recipe": 0}
        self.epoch += 1

    # -- the HMI side of the PLC: commands for the cell through the command word
    # Both requests are one handshake: write the value, then a new sequence number; the cell
    # answers by echoing the sequence with a result.
    _HANDSHAKES: ClassVar[dict[str, tuple[str, str, str, str]]] = {
        "command": ("cmd_code", "cmd_seq", "cmd_ack_seq", "cmd_result"),
        "recipe": ("recipe_number", "recipe_seq", "recipe_ack_seq", "recipe_result"),
    }

    def send_request(self, kind: str, value: int) -> int:
        """Write a request ("command" or "recipe") for the cell; returns its sequence number."""
        value_f, seq_f, _, _ = self._HANDSHAKES[kind]
        self._seq[kind] = seq = (self._seq[kind] + 1) & 0xFFFF
        hdr = self.plc["header"]
        hdr[value_f] = value
        hdr[seq_f] = seq
        return seq

    def request_result(self, kind: str, seq: int) -> int | None:
        """The cell's result for request `seq`, or None while it has not answered."""
        _, _, ack_f, result_f = self._HANDSHAKES[kind]
        h = self.cell["header"]
        return int(h[result_f]) if int(h[ack_f]) == seq else None

    @property
    def cell_state(self) -> int:
        return int(self.cell["header"]["state"])

    @property
    def cell_inspecting(self) -> bool:
        return bool(int(self.cell["header"]["cell_flags"]) & CELL_FLAG_INSPECTING)

    def travel_at(self, t: float) -> int:
        return int((t - self.t0) * self.cfg.counts_per_s)

    def time_at(self, travel: int) -> float:
        return self.t0 + travel / self.cfg.counts_per_s

    def step(self, now: float) -> None:
        cfg = self.cfg
        hdr = self.plc["header"]
        if self._stopped(now):
            return
        if self.running:
            self._travel = self.travel_at(now)
        travel = self._travel
        hdr["heartbeat"] = (int(hdr["heartbeat"]) + 1) & 0xFFFF
        hdr["encoder"] = (cfg.encoder_start + travel + self._encoder_offset) % WRAP
        self._watch_cell_heartbeat(now)
        hdr["plc_flags"] = (PLC_FLAG_RUNNING if self.running else 0) | (
            PLC_FLAG_CELL_HEARTBEAT_OK if self.cell_heartbeat_ok else 0
        )
        self._sensor(travel)
        self._triggers(travel)
        self._take_verdicts(travel)
        self._stations(travel)
        hdr["part_seq"] = self._next_id - 1
        if self._part_seq_glitch is not None:
            jump, left = self._part_seq_glitch
            hdr["part_seq"] = (self._next_id - 1 + jump) % WRAP
            self._part_seq_glitch = (jump, left - 1) if left > 1 else None

    def _watch_cell_heartbeat(self, now: float) -> None:
        hb = int(self.cell["header"]["heartbeat"])
        if hb != self._cell_hb:
            self._cell_hb, self._cell_hb_t = hb, now
            self.cell_heartbeat_ok = True
        elif now - self._cell_hb_t > self.cfg.cell_heartbeat_timeout_s:
            self.cell_heartbeat_ok = False

    def _sensor(self, travel: int) -> None:
        cfg = self.cfg
        n = self.layout.ring_size
        debounce = cfg.counts(cfg.sensor_debounce_mm)
        if not self.feeding:
            # Nothing enters while the infeed is closed; the first part comes a pitch after it opens.
            self._next_travel = max(self._next_travel, travel + cfg.counts(cfg.pitch_mm) - debounce)
            return
        while self.feeding and self._next_travel + debounce <= travel:
            if cfg.parts and self.registered >= cfg.parts:
                self.feeding = False
                break
            self.registered += 1
            pid = self._next_id
            self._next_id += 1
            reg = self._next_travel + debounce
            part = _Part(self.parts_gen.next(pid), reg, self._offsets_for(pid), epoch=self.epoch)
            self.queue.append(part)
            self.by_id[pid] = part
            slot = self.plc["parts"][pid % n]
            slot["part_id"] = pid if self._bad_slot_id is None else self._bad_slot_id
            self._bad_slot_id = None
            slot["sensor_count"] = part.sensor_count = (cfg.encoder_start + reg + self._encoder_offset) % WRAP
            self.plc["header"]["part_seq"] = pid  # bumped after the slot is written
            pitch = cfg.pitch_mm * (1.0 + self.rng.uniform(-cfg.spacing_jitter, cfg.spacing_jitter))
            self._next_travel += cfg.counts(pitch)
            if cfg.extra_triggers and self.rng.random() < cfg.extra_triggers:
                cam = int(self.rng.integers(len(self.cam_offsets)))
                # A stray pulse halfway between two parts: no part is in front of the lens.
                self._spurious.append((cam, reg + self.cam_offsets[cam] + cfg.counts(pitch / 2)))

    def sensor_count(self, part_id: int) -> int:
        """The raw encoder count a part on the belt was registered at."""
        return self.by_id[part_id].sensor_count

    def _offsets_for(self, pid: int) -> list[int]:
        """Trigger offsets for a new part: the cell's active recipe applies from its boundary part on."""
        h = self.cell["header"]
        number, boundary = int(h["active_recipe"]), int(h["recipe_from_part"])
        table = dict(self.cfg.recipe_offsets_mm)
        if number in table and pid >= boundary:
            self._recipe_offsets = [self.cfg.counts(mm) for mm in table[number]]
        return list(self._recipe_offsets)

    def _triggers(self, travel: int) -> None:
        for part in self.queue:
            while part.next_cam < len(part.offsets):
                at = part.travel + part.offsets[part.next_cam]
                if at > travel:
                    break
                self.on_trigger(Trigger(part.next_cam, self.time_at(at), part.truth))
                self._record_trigger(part, part.next_cam, at)
                part.next_cam += 1
        for item in [s for s in self._spurious if s[1] <= travel]:
            self._spurious.remove(item)
            self.on_trigger(Trigger(item[0], self.time_at(item[1]), None))

    def _record_trigger(self, part: _Part, cam: int, at: int) -> None:
        """The trigger ring: write the slot, then bump trig_seq (stray pulses are not the PLC's)."""
        self._cam_seq[cam] += 1
        if self.trig is None:
            return
        hdr = self.trig["header"]
        seq = int(hdr["trig_seq"]) + 1
        slot = self.trig["slots"][seq % self.layout.ring_size]
        slot["camera"], slot["cam_seq"], slot["part_id"] = cam, self._cam_seq[cam], part.truth.part_id
        slot["encoder"] = (self.cfg.encoder_start + at + self._encoder_offset) % WRAP
        hdr["trig_seq"] = seq

    def _take_verdicts(self, travel: int) -> None:
        n = self.layout.ring_size
        slots = self.cell["verdicts"]
        acks = self.plc["acks"]
        for i in range(n):
            s = slots[i]
            pid = int(s["part_id"])
            part = self.by_id.get(pid)
            if part is None:
                continue
            key = (pid, int(s["attempt"]))
            if key in part.seen or part.accepted_attempt:
                continue
            if int(s["sensor_count"]) != part.sensor_count:
                continue  # a verdict for an earlier part with this id (before a restart): not this one
            part.seen.add(key)
            if self.cfg.drop_verdict_writes and self.rng.random() < self.cfg.drop_verdict_writes:
                self.dropped_writes += 1  # the write never reached this PLC's memory
                continue
            a = acks[pid % n]
            a["part_id"], a["verdict"], a["attempt"] = pid, int(s["verdict"]), key[1]
            if part.latched:
                a["status"] = AckStatus.LATE
                continue
            a["status"] = AckStatus.ACCEPTED
            part.verdict = int(s["verdict"])
            part.accepted_attempt = key[1]

    def _stations(self, travel: int) -> None:
        for part in self.queue:
            pos = travel - part.travel
            if pos < self.deadline:
                break
            if not part.latched:
                part.latched = True
                if not self.cell_heartbeat_ok:
                    part.kick, part.cause = True, DispositionCause.CELL_HEARTBEAT_LOST
                elif part.verdict == Verdict.PASS:
                    part.kick, part.cause = False, DispositionCause.PASSED
                elif part.verdict in (Verdict.FAIL, Verdict.NO_DECISION):
                    part.kick, part.cause = True, DispositionCause.VERDICT_REJECT
                else:
                    part.kick, part.cause = True, DispositionCause.NO_VERDICT
            if pos >= self.reject and part.kick and not part.kicked:
                part.kicked = True
                part.removed = not (self.cfg.kick_fail_rate and self.rng.random() < self.cfg.kick_fail_rate)
        while self.queue and travel - self.queue[0].travel >= self.confirm:
            self._report(self.queue.popleft())

    def _outcome(self, part: _Part) -> Outcome:
        return Outcome(
            part.truth.part_id,
            part.truth.defective,
            tuple(k for k, _ in part.truth.defects),
            part.kicked,
            part.removed,
            int(part.cause),
            part.verdict,
            part.epoch,
            part.sensor_count,
            part.restart_reject,
        )

    def _report(self, part: _Part) -> None:
        self.outcomes.append(self._outcome(part))
        del self.by_id[part.truth.part_id]
        self._report_disposition(part.truth.part_id, part.kicked, part.removed, int(part.cause))

    def _report_disposition(self, part_id: int, kicked: bool, removed: bool, cause: int) -> None:
        hdr = self.plc["header"]
        seq = int(hdr["dispo_seq"]) + 1
        d = self.plc["dispos"][seq % self.layout.ring_size]
        d["part_id"] = part_id
        d["flags"] = (DISPO_KICKED if kicked else 0) | (DISPO_CONFIRMED_REMOVED if removed else 0)
        d["cause"] = cause
        hdr["dispo_seq"] = seq

    @property
    def idle(self) -> bool:
        """All parts fed and reported."""
        return not self.feeding and not self.queue

    def expected_duration_s(self) -> float:
        cfg = self.cfg
        return (cfg.parts * cfg.pitch_mm * (1 + cfg.spacing_jitter) + cfg.confirm_mm) / cfg.belt_speed_mm_s


def seconds_to_cover(mm: float, cfg: LineConfig) -> float:
    return mm / cfg.belt_speed_mm_s if cfg.belt_speed_mm_s > 0 else math.inf
