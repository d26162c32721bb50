"""The cell core: tracker, matcher, fusion and state machine wired together, with no I/O.

The service feeds it events (a PLC input snapshot, a frame's trigger time, a view result, a
command) with the time they happened, and executes the actions it returns (run inference on a
frame, write a verdict, record a finished part, raise an alarm, publish a state change). Same
events, same decisions.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from controller.contract import (
    CELL_FLAG_INSPECTING,
    CONTRACT_VERSION,
    DISPO_CONFIRMED_REMOVED,
    DISPO_KICKED,
    AckStatus,
    AlarmCode,
    AreaLayout,
    CommandResult,
    DispositionCause,
    RecipeResult,
    Verdict,
)
from controller.core.counters import Count, Counters, FrameFate
from controller.core.encoder import EncoderHistory, EncoderUnwrapper, signed_diff
from controller.core.fusion import FusionRule, fuse
from controller.core.matcher import Match, Matcher, MatchKind
from controller.core.packml import CellStateMachine, Command, CommandRefused, State, StateChanged
from controller.core.pairing import PairKind, TriggerPairing
from controller.core.plcseq import SeqEvent, SeqStep, SequenceWatch
from controller.core.types import PartTrack, ReasonCode, ViewResult, ViewStatus, ViewTrace
from controller.core.window import Window

log = logging.getLogger(__name__)

#: The fate of a frame the position matcher did not pair with an undecided part.
_FATE_OF_MATCH = {
    MatchKind.EXTRA: FrameFate.EXTRA,
    MatchKind.LATE: FrameFate.LATE,
    MatchKind.AMBIGUOUS: FrameFate.AMBIGUOUS,
    MatchKind.MATCHED: FrameFate.MATCHED_DECIDED,
}


@dataclass(frozen=True)
class CellPlan:
    """What the core needs to know, in encoder counts and seconds (from cell config + recipe)."""

    cameras: tuple[str, ...]
    camera_offsets: Mapping[str, int]
    decision_offset: int
    deadline_offset: int
    reject_offset: int
    confirm_offset: int
    match_tolerance: int
    ack_timeout_s: float = 0.02
    plc_heartbeat_timeout_s: float = 1.0
    max_sample_round_trip_s: float = 0.002
    #: Fastest the encoder can count (counts/s): a bigger step is not believed.
    max_counts_per_s: float = 100_000.0
    counts_per_mm: float = 10.0  # for messages in mm
    #: With the PLC's trigger ring: the cell config's cameras in its order (the ring's indices).
    trigger_cameras: tuple[str, ...] = ()
    #: Shortest distance between two parts at the sensor (counts): more parts are not believed.
    min_part_pitch: int = 1
    hold_on_unconfirmed_kick: bool = True
    recipe_name: str = ""
    recipe_number: int = 0
    recipe_hash: str = ""
    model_hash: str = ""
    generation: int = 0
    fusion: FusionRule = field(default_factory=FusionRule)

    def __post_init__(self) -> None:
        offs = [self.camera_offsets[c] for c in self.cameras]
        if not (min(offs) > 0 and max(offs) < self.decision_offset <= self.deadline_offset):
            raise ValueError("camera offsets must lie between the sensor and the decision point")
        if not self.deadline_offset < self.reject_offset <= self.confirm_offset:
            raise ValueError("need deadline < reject <= confirm")


# Actions returned to the service. A frame is known here only by the owner's `token` for it:
# the buffer stays with the owner (its image keeper), which the core tells what to do with it.
@dataclass(frozen=True, slots=True)
class Infer:
    """Run inference on frame `token`: it is `camera`'s view of part `part_id`."""

    part_id: int
    camera: str
    token: int


@dataclass(frozen=True, slots=True)
class WriteVerdict:
    part_id: int
    verdict: Verdict
    reason: ReasonCode
    attempt: int
    sensor_count: int = 0  # the raw count the PLC registered the part at (0: unknown)


@dataclass(frozen=True, slots=True)
class RecordPart:
    part: PartTrack


@dataclass(frozen=True, slots=True)
class RecipeRequest:
    """The PLC asks for recipe `number` (request sequence `seq`)."""

    seq: int
    number: int


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm raised (once per episode), or cleared with how often its cause recurred."""

    code: int
    text: str
    cleared: bool = False
    occurrences: int = 1


@dataclass(frozen=True, slots=True)
class DropFrame:
    """Frame `token` belongs to no part that needs it (`why`): release it."""

    token: int
    why: str


Action = Infer | WriteVerdict | RecordPart | Alarm | DropFrame | RecipeRequest | StateChanged


class CellCore:
    """Deterministic cell logic. One owner (the control loop) calls it; it never blocks."""

    def __init__(self, plan: CellPlan, layout: AreaLayout) -> None:
        self.plan = plan
        self.layout = layout
        self.sm = CellStateMachine(on_change=self._state_changed)
        self.encoder = EncoderUnwrapper()
        self.history = EncoderHistory(max_speed=plan.max_counts_per_s)
        self.matcher = Matcher(list(plan.cameras), plan.match_tolerance)
        self.parts: dict[int, PartTrack] = {}
        self.undecided: dict[int, PartTrack] = {}
        self.counters = Counters()
        self.alarms: dict[int, str] = {}
        self._alarm_counts: dict[int, int] = {}  # occurrences in the current episode
        self.latencies = Window(4096)  # trigger-to-verdict (s), the newest
        self._inference_ready = False
        self._part_seq = SequenceWatch()
        self._dispo_seq = SequenceWatch()
        # Until the belt has moved this far, a disposition for a part the cell never saw is one
        # registered before the cell's first read (or in a gap it could not read): counted only.
        self._unknown_until: int | None = None
        self._unknown_base = 0  # ... for ids up to this one
        self._part_seq_pos = 0  # belt position when part_seq last advanced
        self._dispo_seq_pos = 0  # ... and dispo_seq
        # The earliest the PLC can have published the encoder value now shown: the read before
        # the one that first showed it (after a stall of the reads, any time during the stall).
        self._t_encoder: float | None = None
        self._t_read: float | None = None  # when the PLC area was last read
        self._sample_hb: int | None = None  # PLC heartbeat of the last encoder sample
        self.plc_scan_s = 0.0  # measured: time between new PLC data (EWMA)
        self._t_sample: float | None = None
        self._samples = 0
        self._ambiguous: deque[bool] = deque(maxlen=200)
        self._outbox: list[Action] = []  # raised between PLC cycles, returned with the next one
        self.pairing = (
            TriggerPairing(plan.trigger_cameras, layout.ring_size, counters=self.counters)
            if plan.trigger_cameras
            else None
        )
        #: Frames waiting for their trigger record: (camera, counter, trigger time, token, arrived).
        self._waiting: list[tuple[str, int, float, int, float]] = []
        self._unpaired: deque[bool] = deque(maxlen=200)
        self._hold_pending = False
        self._hold_cause = ""  # why the pending hold was asked for
        self.epoch = 0
        self._cmd_seq: int | None = None
        self.cmd_ack_seq = 0
        self.cmd_result = CommandResult.NONE
        self._pending: CellPlan | None = None
        self.recipe_from_part = 0
        self._recipe_seq: int | None = None
        self.recipe_ack_seq = 0
        self.recipe_result = RecipeResult.NONE
        self._plc_hb: int | None = None
        self._plc_hb_t = 0.0
        self.position = 0

    # ----------------------------------------------------------------- commands
    def command(self, cmd: Command, cause: str = "") -> str | None:
        """Apply a command; returns None if accepted or the reason it was refused.

        Its StateChanged (and alarms it clears) wait in the outbox: `take_outbox()` hands them
        out now, or they come with the next PLC cycle's actions. `cause`: who sent it."""
        try:
            self.sm.command(cmd, cause)
        except CommandRefused as exc:
            return str(exc)
        self._hold_pending = False
        if cmd in (Command.RESET, Command.CLEAR, Command.UNHOLD):
            # Alarms whose cause persists are raised again by the next snapshot.
            self._clear_alarms()
        return None

    def _hold(self, cause: str) -> None:
        """Hold now, or as soon as the acting state towards Execute completes."""
        if Command.HOLD in self.sm.allowed():
            self.sm.command(Command.HOLD, cause)
        elif self.sm.state in (State.STARTING, State.UNHOLDING, State.UNSUSPENDING):
            self._hold_pending, self._hold_cause = True, cause

    def _state_changed(self, change: StateChanged) -> None:
        # Between PLC cycles (a command) it waits for the owner; within one it leaves with it.
        self._outbox.append(change)

    def take_outbox(self) -> list[Action]:
        """What was raised since the owner last took actions (state changes from a command,
        alarms cleared, alarms raised between PLC cycles), for an owner that wants it now."""
        actions, self._outbox = self._outbox, []
        return actions

    @property
    def state(self) -> State:
        return self.sm.state

    # ------------------------------------------------- what the owner asks and tells
    def models_ready(self, ready: bool = True) -> None:
        """The models can judge parts (or no longer can): Starting completes only while they can."""
        self._inference_ready = ready

    @property
    def counts(self) -> Counter[str]:
        """The counters under their serialised names (`Counters.as_dict`): a copy, for readers
        not yet on the typed `counters`."""
        return Counter(self.counters.as_dict())

    @property
    def inference_ready(self) -> bool:
        """The owner said the models can judge parts (`models_ready`)."""
        return self._inference_ready

    def is_undecided(self, part_id: int) -> bool:
        """The part is registered and has no verdict yet."""
        return part_id in self.undecided

    def any_undecided(self) -> bool:
        return bool(self.undecided)

    def generation_of(self, part_id: int) -> int | None:
        """The recipe generation that judges a tracked part (None: not tracked, or no plan)."""
        track = self.parts.get(part_id)
        return track.plan.generation if track is not None and track.plan is not None else None

    def generations_in_use(self) -> set[int]:
        """The recipe generations that undecided parts depend on."""
        return {t.plan.generation for t in self.undecided.values() if t.plan is not None}

    def track_of(self, part_id: int) -> PartTrack | None:
        """A tracked part (None once recorded, or never seen), for the owner to read only."""
        return self.parts.get(part_id)

    def awaiting_acks(self) -> bool:
        """Some part's verdict was handed out to write but is neither echoed nor disposed of."""
        return any(t.attempts and t.ack is AckStatus.NONE and t.kicked is None for t in self.parts.values())

    def alarm_active(self, code: int) -> bool:
        return code in self.alarms

    def verdict_queue_full(self) -> None:
        """The owner could not queue a verdict write (the core repeats it while unacknowledged)."""
        self.counters.add(Count.VERDICT_QUEUE_FULL)

    @property
    def inspecting(self) -> bool:
        return self.sm.state is State.EXECUTE

    def _advance_acting_states(self) -> None:
        s = self.sm.state
        if s is State.STARTING and not self._inference_ready:
            return
        if s in (State.RESETTING, State.UNHOLDING) and (
            AlarmCode.PLC_HEARTBEAT_LOST in self.alarms or AlarmCode.PLC_LINK_LOST in self.alarms
        ):
            return
        if s is State.STOPPING and self.undecided:
            return
        self.sm.complete_acting()
        if self._hold_pending and Command.HOLD in self.sm.allowed():
            self._hold_pending = False
            self.sm.command(Command.HOLD, self._hold_cause)

    # ---------------------------------------------------------------- PLC input
    def on_plc_inputs(
        self, snap: np.void, now: float, round_trip: float = 0.0, triggers: np.void | None = None
    ) -> list[Action]:
        """Handle one snapshot of the whole PLC → cell area, read at `now`.

        `round_trip` is how long the read took: a slow one (the reading thread was stalled)
        does not say precisely when the encoder was sampled, so it does not feed the
        time → position history that frames are matched with.
        """
        actions = self.take_outbox()
        hdr = snap["header"]
        self._track_encoder(int(hdr["encoder"]), int(hdr["heartbeat"]), now, round_trip, actions)
        self._watch_heartbeat(int(hdr["heartbeat"]), now, actions)
        parts, dispos = self._watch_sequences(int(hdr["part_seq"]), int(hdr["dispo_seq"]), now, actions)
        self._handle_command(int(hdr["cmd_seq"]), int(hdr["cmd_code"]))
        self._handle_recipe_request(int(hdr["recipe_seq"]), int(hdr["recipe_number"]), actions)
        self._register_parts(snap, parts, now, actions)
        if triggers is not None and self.pairing is not None:
            self._take_triggers(triggers, now, actions)
        self._handle_acks(snap, now)
        self._decide_overdue(now, actions)
        self._repeat_unacked(now, actions)
        self._handle_dispositions(snap, dispos, now, actions)
        self._advance_acting_states()
        actions += self.take_outbox()  # raised during this cycle: state changes, cleared alarms
        return actions

    # ------------------------------------------------- PLC data the cell checks
    def _track_encoder(self, raw: int, hb: int, now: float, round_trip: float, actions: list[Action]) -> None:
        """Follow the encoder; a step back, or further than the belt can move, is not believed.

        A PLC publishes its encoder once per scan, so reads in between repeat a stale value. Only
        new PLC data (a new encoder value or heartbeat) is a sample, timed halfway between the
        read that still showed the old data and this one, give or take half that interval.
        """
        t_prev, self._t_read = self._t_read, now
        if self._t_encoder is not None and raw != self.encoder.raw:
            step = signed_diff(raw, self.encoder.raw or 0)
            dt = max(now - self._t_encoder, 0.0)
            # A PLC publishes its encoder once per scan: allow a few scans' worth on top.
            limit = self.plan.max_counts_per_s * (2.0 * dt + 0.05) + self.plan.match_tolerance
            if step < -self.plan.match_tolerance or step > limit:
                self.encoder.rebase(raw)  # positions go on from here: tracking stays monotonic
                self.history.clear()
                self._reset_pairing(now, actions)
                self._t_encoder = t_prev if t_prev is not None else now
                self._untrusted(
                    AlarmCode.ENCODER_IMPLAUSIBLE,
                    f"encoder stepped {step:+d} counts in {dt * 1e3:.0f} ms (max {limit:.0f})",
                    now,
                    actions,
                )
                return
        fresh = raw != self.encoder.raw or hb != self._sample_hb
        if self._t_encoder is None or raw != self.encoder.raw:
            self._t_encoder = t_prev if t_prev is not None else now
        self.position = self.encoder.update(raw)
        if not fresh:
            return
        self._sample_hb = hb
        if round_trip > self.plan.max_sample_round_trip_s:
            self.counters.add(Count.IMPRECISE_ENCODER_SAMPLES)
            return
        half = (now - t_prev) / 2.0 if t_prev is not None else 0.0
        t_sample = now - half
        if self._t_sample is not None:
            gap = t_sample - self._t_sample
            self.plc_scan_s = gap if self.plc_scan_s == 0.0 else 0.9 * self.plc_scan_s + 0.1 * gap
        self._t_sample = t_sample
        self.history.add(t_sample, self.position, half + round_trip / 2.0)
        self._samples += 1
        if self._samples == 200:
            self._check_pairing_margin(now)

    def _watch_sequences(
        self, part_seq: int, dispo_seq: int, now: float, actions: list[Action]
    ) -> tuple[SeqStep, SeqStep]:
        n = self.layout.ring_size
        travel = max(self.position - self._part_seq_pos, 0)
        parts = self._part_seq.step(part_seq, n + travel // max(self.plan.min_part_pitch, 1), now)
        # Dispositions: the parts tracked, and those that can have passed since the last one read
        # (after a read gap, such as a link drop, the PLC reports parts the cell never saw).
        gap = max(self.position - self._dispo_seq_pos, 0) // max(self.plan.min_part_pitch, 1)
        dispos = self._dispo_seq.step(dispo_seq, n + len(self.parts) + gap, now)
        if dispos.event is not SeqEvent.JUMP and dispos.event is not SeqEvent.BACK:
            self._dispo_seq_pos = self.position
        if parts.event in (SeqEvent.LEARNED, SeqEvent.ADOPTED):
            self._unknown_until = self.position + 2 * self.plan.confirm_offset
            self._unknown_base = (parts.first - 1) & 0xFFFFFFFF
        if parts.event in (SeqEvent.ADVANCED, SeqEvent.ADOPTED, SeqEvent.LEARNED, SeqEvent.RESTARTED):
            self._part_seq_pos = self.position
        for name, step, raw in (("part_seq", parts, part_seq), ("dispo_seq", dispos, dispo_seq)):
            code = AlarmCode.PART_DATA_INVALID if name == "part_seq" else AlarmCode.DISPO_DATA_INVALID
            if step.event is SeqEvent.JUMP and step.reads == 1:
                self._untrusted(code, f"{name} jumped to {raw}, from {self._seq_value(name)}", now, actions)
            elif step.event is SeqEvent.BACK and step.reads == 1:
                self._untrusted(
                    code, f"{name} went back to {raw}, from {self._seq_value(name)}", now, actions
                )
            elif step.event is SeqEvent.ADOPTED:
                log.warning("%s: the jump to %d lasted; counting goes on from there", name, raw)
                self._alarm(code, f"{name} jumped to {raw} and stayed: counting goes on from there", actions)
        if SeqEvent.RESTARTED in (parts.event, dispos.event):
            self._plc_restarted(part_seq, dispo_seq, now, actions)
            if parts.event is not SeqEvent.RESTARTED:
                parts = self._part_seq.follow_restart(part_seq)
            if dispos.event is not SeqEvent.RESTARTED:
                dispos = self._dispo_seq.follow_restart(dispo_seq)
            self._unknown_until = self.position + 2 * self.plan.confirm_offset
            self._unknown_base = (parts.first - 1) & 0xFFFFFFFF
        return parts, dispos

    def _seq_value(self, name: str) -> int:
        v = (self._part_seq if name == "part_seq" else self._dispo_seq).value
        return (v or 0) & 0xFFFFFFFF

    def _plc_restarted(self, part_seq: int, dispo_seq: int, now: float, actions: list[Action]) -> None:
        """The PLC counts from zero again: what it knew of the parts on the belt is gone."""
        self._untrusted(
            AlarmCode.PLC_RESTARTED,
            f"PLC restarted: part_seq {part_seq}, dispo_seq {dispo_seq} went back",
            now,
            actions,
        )
        for track in list(self.parts.values()):
            track.alarms.append("plc_restarted")  # recorded without a disposition
            self._finish(track, actions)
        self.epoch += 1
        self._cmd_seq = self._recipe_seq = None  # learnt again, never replayed
        self._reset_pairing(now, actions)

    def raise_alarm(self, code: AlarmCode, text: str) -> list[Action]:
        """An alarm the owner saw (images not saved): shown everywhere, recorded once per episode."""
        actions: list[Action] = []
        self._alarm(code, text, actions)
        return actions

    def _check_pairing_margin(self, now: float) -> None:
        """At start: say whether positions alone can tell the closest parts apart at this scan."""
        found = self.history.locate(now)
        if found is None:
            return
        cpm = self.plan.counts_per_mm
        window = (self.plan.match_tolerance + found[1]) / cpm
        pitch = self.plan.min_part_pitch / cpm
        level = logging.WARNING if 2 * window > pitch else logging.INFO
        log.log(
            level,
            "frame pairing by position: ±%.1f mm at %.2f m/s with a %.1f ms PLC scan; parts closer than "
            "%.0f mm are rejected as ambiguous (min_part_pitch_mm %.0f)",
            window, self.history.speed() / cpm / 1000, self.plc_scan_s * 1e3, 2 * window, pitch,
        )  # fmt: skip

    def fault(self, code: AlarmCode, text: str, now: float) -> list[Action]:
        """Something the owner caught (an error handling PLC data): alarm, fail safe, hold."""
        actions: list[Action] = []
        self._untrusted(code, text, now, actions)
        return actions + self.take_outbox()

    def _untrusted(self, code: AlarmCode, text: str, now: float, actions: list[Action]) -> None:
        """PLC data the cell cannot follow: alarm, reject every undecided part, hold."""
        self.counters.plc_data[code] += 1
        self._alarm(code, text, actions)
        for track in list(self.undecided.values()):
            for cam, trace in track.views.items():
                if trace.result is None:
                    trace.result = ViewResult(cam, ViewStatus.FAILED, cause=ReasonCode.PLC_DATA)
            self._decide(track, Verdict.NO_DECISION, ReasonCode.PLC_DATA, ["plc_data_invalid"], now)
            self.matcher.forget(track.part_id)
            del self.undecided[track.part_id]
            actions.append(self._write(track, now))
        self._hold(f"alarm {code.name}")

    def _watch_heartbeat(self, hb: int, now: float, actions: list[Action]) -> None:
        if hb != self._plc_hb:
            self._plc_hb, self._plc_hb_t = hb, now
            return
        code = AlarmCode.PLC_HEARTBEAT_LOST
        if now - self._plc_hb_t > self.plan.plc_heartbeat_timeout_s and code not in self.alarms:
            self._alarm(code, "PLC heartbeat stopped changing", actions)
            self._hold(f"alarm {code.name}")

    def link_lost(self, why: str) -> list[Action]:
        """The PLC link failed: alarm, and hold if inspecting (the PLC rejects parts meanwhile)."""
        actions: list[Action] = []
        self._alarm(AlarmCode.PLC_LINK_LOST, f"PLC link lost: {why}", actions)
        self._reset_pairing(0.0, actions)  # frames waiting for trigger records: none will come now
        cause = f"alarm {AlarmCode.PLC_LINK_LOST.name}"
        self._hold(cause)
        if self.sm.state is State.HOLDING:
            self.sm.complete_acting(cause)  # no PLC cycle comes to complete it
        return actions + self.take_outbox()

    def cameras_absent(self, names: Sequence[str]) -> list[Action]:
        """Cameras that are gone (removed, unpowered): alarm while they are away.

        Their views go missing, so every part inspected meanwhile is a NO_DECISION reject;
        the alarm is cleared by Clear or Reset once they are back.
        """
        actions: list[Action] = []
        text = f"camera gone: {', '.join(names)}"
        if names and self.alarms.get(AlarmCode.CAMERA_LOST) != text:
            self._alarm(AlarmCode.CAMERA_LOST, text, actions, replace_text=True)
        return actions

    def _handle_command(self, seq: int, code: int) -> None:
        if self._cmd_seq is None:
            # The first snapshot only learns the sequence: an old command is not replayed.
            self._cmd_seq = self.cmd_ack_seq = seq
            return
        if seq == self._cmd_seq:
            return
        self._cmd_seq = self.cmd_ack_seq = seq
        if seq == 0 and code == 0:
            # A PLC's command word at start (after a restart): no command yet, nothing to answer.
            self.cmd_result = CommandResult.NONE
            return
        try:
            cmd = Command(code)
        except ValueError:
            cmd = Command.UNDEFINED
        if cmd is Command.UNDEFINED:
            self.cmd_result = CommandResult.UNKNOWN
            log.warning(
                "PLC command %d (cmd_seq %d) is not a PackML command (1-10): answered unknown", code, seq
            )
            return
        refused = self.command(cmd, "plc")
        self.cmd_result = CommandResult.REFUSED if refused else CommandResult.ACCEPTED
        if refused:
            log.warning("PLC command refused: %s", refused)

    def _handle_recipe_request(self, seq: int, number: int, actions: list[Action]) -> None:
        if self._recipe_seq is None:
            self._recipe_seq = self.recipe_ack_seq = seq  # an old request is not replayed
            return
        if seq == self._recipe_seq:
            return
        self._recipe_seq = seq
        if seq == 0 and number == 0:
            # A PLC's recipe request word at start (after a restart): nothing asked.
            self.recipe_ack_seq, self.recipe_result = 0, RecipeResult.NONE
            return
        actions.append(RecipeRequest(seq, number))

    def answer_recipe(self, seq: int, result: RecipeResult) -> None:
        """The service finished a PLC recipe request: echo it with its result."""
        self.recipe_ack_seq, self.recipe_result = seq, result

    def recipe_refusal(self) -> str | None:
        """Why a recipe cannot be activated now, or None."""
        if self.sm.state not in (State.IDLE, State.HELD, State.STOPPED, State.EXECUTE):
            return f"not in a safe state ({self.sm.state.name}); allowed in IDLE, HELD, STOPPED or EXECUTE"
        if self._pending is not None:
            return f"changeover to {self._pending.recipe_name} still waits for part {self.recipe_from_part}"
        return None

    def activate(self, plan: CellPlan) -> int:
        """Make `plan` judge every part from the returned part id on; parts before it keep theirs.

        In Execute the boundary leaves room for the part the PLC may be registering right
        now; elsewhere no part is being inspected and the switch is immediate.
        """
        for cam in plan.cameras:
            self.matcher.add_camera(cam)
        seen = self._part_seq.value or 0
        if self.inspecting:
            self._pending, self.recipe_from_part = plan, seen + 2
        else:
            self.plan, self._pending, self.recipe_from_part = plan, None, seen + 1
        return self.recipe_from_part

    @property
    def changeover_pending(self) -> bool:
        return self._pending is not None

    @property
    def announced_plan(self) -> CellPlan:
        """The plan for parts from `recipe_from_part` on (published to the PLC)."""
        return self._pending or self.plan

    def _register_parts(self, snap: np.void, step: SeqStep, now: float, actions: list[Action]) -> None:
        new = (SeqEvent.ADVANCED, SeqEvent.RESTARTED, SeqEvent.ADOPTED)
        if step.event not in new or step.last < step.first:
            return  # learned or not believed: nothing to register from this read
        n = self.layout.ring_size
        first = max(step.first, step.last - n + 1)
        if first > step.first:
            lost = first - step.first
            self._alarm(AlarmCode.PART_RING_OVERRUN, f"part ring overrun: {lost} parts unseen", actions)
            for seq in range(step.first, first):
                pid = seq & 0xFFFFFFFF
                self._unseen_part(pid, ReasonCode.RING_OVERRUN, "part_ring_overrun", now, actions)
        parts = snap["parts"]
        for seq in range(first, step.last + 1):
            pid = seq & 0xFFFFFFFF  # ids are the PLC's 32-bit ones: they wrap with part_seq
            slot = parts[pid % n]
            slot_id, sensor_count = int(slot["part_id"]), int(slot["sensor_count"])
            if slot_id != pid:
                why = f"slot {pid % n} holds part id {slot_id}, expected {pid} (part_seq {pid})"
            elif self.encoder.unwrap_past(sensor_count) > self.position + self.plan.match_tolerance:
                why = f"part {pid} registered at encoder {sensor_count}, ahead of the belt"
            else:
                self._new_part(pid, sensor_count, now, actions)
                continue
            self._untrusted(AlarmCode.PART_DATA_INVALID, f"part ring: {why}", now, actions)
            self._unseen_part(pid, ReasonCode.PLC_DATA, "plc_data_invalid", now, actions)

    def _unseen_part(self, pid: int, reason: ReasonCode, tag: str, now: float, actions: list[Action]) -> None:
        """A part the PLC announced but the cell could not read: recorded and rejected."""
        # Position unknown: it passed the sensor within the last cycles.
        track = PartTrack(pid, 0, self.position, now, inspected=False, plan=self.plan, epoch=self.epoch)
        self.counters.add(Count.PARTS)
        self._decide(track, Verdict.NO_DECISION, reason, [tag], now)
        actions.append(self._write(track, now))
        self.parts[pid] = track

    def _new_part(self, pid: int, sensor_count: int, now: float, actions: list[Action]) -> None:
        pos = self.encoder.unwrap_past(sensor_count)
        track = PartTrack(
            pid, sensor_count, pos, now, inspected=self.inspecting, plan=self.plan, epoch=self.epoch
        )
        self.parts[pid] = track
        self.counters.add(Count.PARTS)
        if not track.inspected:
            self._decide(track, Verdict.NO_DECISION, ReasonCode.NOT_INSPECTING, ["not_inspecting"], now)
            actions.append(self._write(track, now))
            return
        if self._pending is not None and pid >= self.recipe_from_part:
            self.plan, self._pending = self._pending, None
            log.info("recipe %s judges parts from %d on", self.plan.recipe_name, pid)
        plan = track.plan = self.plan
        for cam in plan.cameras:
            track.views[cam] = ViewTrace()
            self.matcher.expect(cam, pos + plan.camera_offsets[cam], pid)
        self.undecided[pid] = track

    def _handle_acks(self, snap: np.void, now: float) -> None:
        acks = snap["acks"]
        n = self.layout.ring_size
        for pid, track in self.parts.items():
            if track.attempts == 0 or track.ack is not AckStatus.NONE:
                continue
            a = acks[pid % n]
            if int(a["part_id"]) == pid and int(a["verdict"]) == track.verdict:
                track.ack = AckStatus(int(a["status"])) if int(a["status"]) in (1, 2) else AckStatus.NONE
                track.t_acked = now
                if track.ack is AckStatus.LATE:
                    self.counters.add(Count.VERDICT_LATE_AT_PLC)

    def _decide_overdue(self, now: float, actions: list[Action]) -> None:
        due = [p for p, t in self.undecided.items() if self.position - t.sensor_pos >= t.plan.decision_offset]
        for pid in due:
            track = self.undecided[pid]
            for cam in self.matcher.forget(pid):
                trace = track.views[cam]
                if trace.result is None:
                    trace.result = ViewResult(cam, ViewStatus.MISSING, cause=ReasonCode.MISSING_FRAME)
                    self.counters.frame(cam, FrameFate.MISSING)
            for cam, trace in track.views.items():
                if trace.result is None:  # frame arrived, inference did not finish in time
                    trace.result = ViewResult(cam, ViewStatus.FAILED, cause=ReasonCode.DEADLINE)
                    self.counters.frame(cam, FrameFate.INFERENCE_OVERRUN)
            actions.extend(self._fuse(track, now))

    def _repeat_unacked(self, now: float, actions: list[Action]) -> None:
        for track in self.parts.values():
            if track.attempts == 0 or track.ack is not AckStatus.NONE or track.t_last_write is None:
                continue
            if self.position - track.sensor_pos >= (track.plan or self.plan).deadline_offset:
                continue  # too late to matter: the PLC rejects it anyway
            if now - track.t_last_write >= self.plan.ack_timeout_s:
                self.counters.add(Count.VERDICT_REPEATS)
                actions.append(self._write(track, now))

    def _handle_dispositions(self, snap: np.void, step: SeqStep, now: float, actions: list[Action]) -> None:
        if step.event in (SeqEvent.ADVANCED, SeqEvent.RESTARTED) and step.last >= step.first:
            n = self.layout.ring_size
            first = max(step.first, step.last - n + 1)
            if first > step.first:
                self._alarm(AlarmCode.DISPO_RING_OVERRUN, "disposition ring overrun", actions)
            dispos = snap["dispos"]
            for k in range(first, step.last + 1):
                self._disposition(k, dispos[k % n], now, actions)
        # A part far past the confirm sensor with no report is finished as such, never dropped.
        stale = 2 * self.plan.confirm_offset
        for track in [t for t in self.parts.values() if self.position - t.sensor_pos > stale]:
            if track.part_id in self.undecided:
                continue
            self._alarm(AlarmCode.NO_DISPOSITION, f"part {track.part_id}: no disposition from PLC", actions)
            self._finish(track, actions)

    def _disposition(self, k: int, d: np.void, now: float, actions: list[Action]) -> None:
        pid = int(d["part_id"])
        track = self.parts.get(pid)
        if track is None:
            before = signed_diff(pid, self._unknown_base) <= 0
            if before and self._unknown_until is not None and self.position <= self._unknown_until:
                self.counters.add(Count.DISPO_BEFORE_CONNECT)  # on the belt before the cell's first read
            else:
                why = f"disposition {k} is for part {pid}, which the cell does not track"
                self._untrusted(AlarmCode.DISPO_DATA_INVALID, why, now, actions)
            return
        if pid in self.undecided:  # reported before the cell judged it: not a report to believe
            why = f"disposition {k} is for part {pid}, which has no verdict yet"
            self._untrusted(AlarmCode.DISPO_DATA_INVALID, why, now, actions)
        flags = int(d["flags"])
        track.kicked = bool(flags & DISPO_KICKED)
        track.confirmed_removed = bool(flags & DISPO_CONFIRMED_REMOVED)
        track.plc_cause = int(d["cause"])
        track.t_disposition = now
        self._finish(track, actions)

    def _finish(self, track: PartTrack, actions: list[Action]) -> None:
        # The PLC also rejects everything while it misses the cell's heartbeat (the contract).
        track.expected_kick = (
            track.verdict is not Verdict.PASS
            or track.ack is not AckStatus.ACCEPTED
            or track.plc_cause == DispositionCause.CELL_HEARTBEAT_LOST
        )
        if track.kicked is not None and track.kicked != track.expected_kick:
            self.counters.add(Count.MISROUTE)
            track.alarms.append("misroute")
            self._alarm(AlarmCode.MISROUTE, f"part {track.part_id}: kick does not match verdict", actions)
        if track.kicked and not track.confirmed_removed:
            self.counters.add(Count.REJECT_NOT_CONFIRMED)
            track.alarms.append("reject_not_confirmed")
            self._alarm(
                AlarmCode.REJECT_NOT_CONFIRMED, f"part {track.part_id}: reject not confirmed", actions
            )
            if (track.plan or self.plan).hold_on_unconfirmed_kick and Command.HOLD in self.sm.allowed():
                self.sm.command(Command.HOLD, f"alarm {AlarmCode.REJECT_NOT_CONFIRMED.name}")
        if track.kicked is not None and track.plc_cause in (
            DispositionCause.NO_VERDICT,
            DispositionCause.LATE_VERDICT,
        ):
            self.counters.plc_rejects[DispositionCause(track.plc_cause)] += 1
        self.matcher.forget(track.part_id)
        del self.parts[track.part_id]
        self.undecided.pop(track.part_id, None)
        actions.append(RecordPart(track))

    # ------------------------------------------------------------------ frames
    def on_frame(
        self, camera: str, t_trigger: float, frame_counter: int, token: int, now: float
    ) -> Action | None:
        """A frame arrived (`token`: the owner's name for it); returns Infer for a matched one,
        DropFrame otherwise, or None while it waits for the PLC's trigger record (its Infer or
        DropFrame comes with a later PLC cycle, or with `decide_all`)."""
        if self.pairing is not None:
            return self._pair_by_trigger(camera, frame_counter, t_trigger, token, now, now)
        found = self.history.locate(t_trigger)
        if found is None:
            self.counters.add(Count.FRAME_BEFORE_ENCODER)
            return DropFrame(token, "no encoder position yet")
        pos, spread = found
        m = self.matcher.match(camera, pos, spread)
        self._watch_ambiguity(m, camera, spread, now)
        for pid in m.missed:
            self.counters.frame(camera, FrameFate.MISSING)
            track = self.undecided.get(pid)
            if track is not None:
                track.views[camera].result = ViewResult(
                    camera, ViewStatus.MISSING, cause=ReasonCode.MISSING_FRAME
                )
        if m.kind is not MatchKind.MATCHED or m.part_id not in self.undecided:
            self.counters.frame(camera, _FATE_OF_MATCH[m.kind])
            return DropFrame(token, m.kind.value)
        trace = self.undecided[m.part_id].views[camera]
        trace.frame_counter, trace.t_trigger, trace.t_frame = frame_counter, t_trigger, now
        return Infer(m.part_id, camera, token)

    # ---------------------------------------------------- pairing by trigger ring
    def _take_triggers(self, area: np.void, now: float, actions: list[Action]) -> None:
        assert self.pairing is not None
        n_cams = max(len(self.pairing.cameras), 1)
        travel = max(self.position - self._part_seq_pos, 0)
        plausible = n_cams * (self.layout.ring_size + travel // max(self.plan.min_part_pitch, 1))
        step = self.pairing.ingest(area, self.encoder.unwrap_past, plausible, now)
        if step.event in (SeqEvent.JUMP, SeqEvent.BACK) and step.reads == 1:
            self._untrusted(
                AlarmCode.PART_DATA_INVALID,
                f"trig_seq {step.event.value} to an implausible value",
                now,
                actions,
            )
        waiting, self._waiting = self._waiting, []
        patience = max(0.05, 3.0 * self.plc_scan_s)
        for cam, counter, t_trig, token, arrived in waiting:
            act = self._pair_by_trigger(cam, counter, t_trig, token, arrived, now, patience)
            if act is not None:
                actions.append(act)

    def _pair_by_trigger(
        self, camera: str, counter: int, t_trigger: float, token: int, arrived: float, now: float,
        patience: float = 0.05,
    ) -> Action | None:  # fmt: skip
        assert self.pairing is not None
        found = self.history.locate(t_trigger)
        pos, spread = found if found is not None else (None, 0.0)
        band = self.plan.match_tolerance + spread
        p = self.pairing.pair(camera, counter, pos, band)
        if p.kind is PairKind.PENDING and now - arrived < patience:
            self._waiting.append((camera, counter, t_trigger, token, arrived))
            return None
        if p.kind is PairKind.PENDING:
            self.pairing.unlock(camera)  # its record never came: never wait on a wrong lock again
        self._watch_unpaired(p.kind is not PairKind.PAIRED, camera, now)
        if p.kind is not PairKind.PAIRED or p.part_id is None:
            # No trigger record ever came for it: a pulse the PLC did not fire (or a lost lock).
            why = "ambiguous" if p.kind is PairKind.AMBIGUOUS else "extra"
            self.counters.frame(camera, FrameFate.AMBIGUOUS if why == "ambiguous" else FrameFate.EXTRA)
            return DropFrame(token, why)
        others = [] if pos is None else [q for q in self.matcher.near(camera, pos, band) if q != p.part_id]
        if others:
            # Another part's trigger lies within this frame's uncertainty: a pulse lost or added
            # on the wiring could not be told from the counter here, so the count is not trusted.
            self.counters.frame(camera, FrameFate.AMBIGUOUS)
            for q in (p.part_id, *others):
                track = self.undecided.get(q)
                if track is not None and camera in track.views and track.views[camera].result is None:
                    track.views[camera].result = ViewResult(
                        camera, ViewStatus.MISSING, cause=ReasonCode.FRAME_AMBIGUOUS
                    )
            return DropFrame(token, "ambiguous")
        track = self.undecided.get(p.part_id)
        if track is None or camera not in track.views or track.views[camera].result is not None:
            self.counters.frame(camera, FrameFate.LATE)
            return DropFrame(token, "late")
        self.matcher.consume(camera, p.part_id)
        trace = track.views[camera]
        trace.frame_counter, trace.t_trigger, trace.t_frame = counter, t_trigger, arrived
        return Infer(p.part_id, camera, token)

    def _watch_unpaired(self, unpaired: bool, camera: str, now: float) -> None:
        self._unpaired.append(unpaired)
        n = sum(self._unpaired)
        code = AlarmCode.TRIGGER_PAIRING
        if n >= 5 and n > 0.02 * len(self._unpaired) and code not in self.alarms:
            assert self.pairing is not None
            text = (
                f"{n} of the last {len(self._unpaired)} frames did not pair with the PLC's trigger ring "
                f"(last: camera {camera}; trig_seq {self.pairing.seq.value}; resyncs "
                f"{sum(self.counters.trigger_resyncs.values())})"
            )
            self._alarm(code, text, self._outbox)

    def _reset_pairing(self, now: float, actions: list[Action]) -> None:
        if self.pairing is None:
            return
        self.pairing.reset()
        for *_, token, _arrived in self._waiting:
            actions.append(DropFrame(token, "pairing reset"))
        self._waiting.clear()

    def _watch_ambiguity(self, m: Match, camera: str, spread: float, now: float) -> None:
        """Give up the views of parts an ambiguous frame could belong to; alarm when it is common."""
        self._ambiguous.append(m.kind is MatchKind.AMBIGUOUS)
        if m.kind is not MatchKind.AMBIGUOUS:
            return
        for pid in m.candidates:
            track = self.undecided.get(pid)
            if track is not None and camera in track.views:
                track.views[camera].result = ViewResult(
                    camera, ViewStatus.MISSING, cause=ReasonCode.FRAME_AMBIGUOUS
                )
        n = sum(self._ambiguous)
        code = AlarmCode.FRAMES_AMBIGUOUS
        if n >= 5 and n > 0.02 * len(self._ambiguous) and code not in self.alarms:
            cpm = self.plan.counts_per_mm
            speed = self.history.speed()
            text = (
                f"{n} of the last {len(self._ambiguous)} frames could belong to two parts: position "
                f"uncertain by ±{(spread + self.plan.match_tolerance) / cpm:.0f} mm (PLC scan "
                f"{self.plc_scan_s * 1e3:.1f} ms, belt {speed / cpm / 1000:.2f} m/s); the PLC must "
                "publish its encoder more often, or give trigger pairing"
            )
            self._alarm(code, text, self._outbox)  # handed over with the next PLC cycle's actions

    def on_view_result(self, part_id: int, result: ViewResult, t_start: float, t_end: float) -> list[Action]:
        """An inference finished (or failed). Fuses when the part's last view is in."""
        track = self.undecided.get(part_id)
        if track is None:
            self.counters.add(Count.LATE_RESULT)
            return []
        trace = track.views[result.camera]
        trace.t_infer_start, trace.t_infer_end, trace.result = t_start, t_end, result
        if result.status is not ViewStatus.OK:
            self.counters.view_failures[result.cause] += 1
        if all(v.result is not None for v in track.views.values()):
            return self._fuse(track, t_end)
        return []

    # --------------------------------------------------------------- decisions
    def _fuse(self, track: PartTrack, now: float) -> list[Action]:
        views = {c: t.result for c, t in track.views.items() if t.result is not None}
        f = fuse(track.plan.cameras, views, track.plan.fusion)
        self._decide(track, f.verdict, f.reason, list(f.reasons), now)
        self.matcher.forget(track.part_id)
        del self.undecided[track.part_id]
        return [self._write(track, now)]

    def _decide(
        self, track: PartTrack, verdict: Verdict, reason: ReasonCode, reasons: list[str], now: float
    ) -> None:
        track.verdict, track.reason, track.reasons, track.t_fused = verdict, reason, reasons, now
        self.counters.verdicts[verdict] += 1
        if verdict is Verdict.NO_DECISION:
            self.counters.no_decision[reason] += 1

    def _write(self, track: PartTrack, now: float) -> WriteVerdict:
        track.attempts += 1
        return WriteVerdict(track.part_id, track.verdict, track.reason, track.attempts, track.sensor_count)

    def _mark_written(self, track: PartTrack, now: float) -> None:
        if track.t_first_write is None:
            track.t_first_write = now
            last = track.last_trigger
            if last is not None:
                self.latencies.append(now - last)
        track.t_last_write = now

    def verdict_written(self, part_id: int, now: float) -> None:
        """The service reports a verdict write completed on the wire at `now`."""
        track = self.parts.get(part_id)
        if track is not None:
            self._mark_written(track, now)

    def _alarm(self, code: int, text: str, actions: list[Action], replace_text: bool = False) -> None:
        """Raise `code`: recorded once per episode (until cleared); repeats are only counted."""
        self._alarm_counts[code] = self._alarm_counts.get(code, 0) + 1
        if code in self.alarms:
            if replace_text:
                self.alarms[code] = text
            return
        log.warning("alarm %d: %s", code, text)
        self.alarms[code] = text
        actions.append(Alarm(code, text))

    def _clear_alarms(self) -> None:
        for code in self.alarms:
            n = self._alarm_counts.get(code, 1)
            self._outbox.append(Alarm(code, f"cleared after {n} occurrence{'s' * (n > 1)}", True, n))
        self.alarms.clear()
        self._alarm_counts.clear()

    # ---------------------------------------------------------------- shutdown
    def decide_all(self, now: float) -> list[Action]:
        """Stopping: every undecided part becomes NO_DECISION; returns their verdict writes."""
        actions: list[Action] = [DropFrame(token, "stopping") for _, _, _, token, _ in self._waiting]
        self._waiting.clear()
        for track in list(self.undecided.values()):
            for cam, trace in track.views.items():
                if trace.result is None:
                    trace.result = ViewResult(cam, ViewStatus.MISSING, cause=ReasonCode.DEADLINE)
            actions.extend(self._fuse(track, now))
        return actions

    def finish_all(self) -> list[Action]:
        """Stopped: a record for every part still tracked (those the PLC has not reported)."""
        actions = self.take_outbox()
        for track in list(self.parts.values()):
            self._finish(track, actions)
        return actions + self.take_outbox()

    def flush(self, now: float) -> list[Action]:
        """`decide_all` then `finish_all`, for owners with no PLC to write to in between."""
        return self.decide_all(now) + self.finish_all()

    def header_fields(self) -> dict[str, int]:
        """What the cell → PLC header says now (the owner adds its heartbeat)."""
        return {
            "state": int(self.state),
            "cmd_ack_seq": self.cmd_ack_seq,
            "cmd_result": int(self.cmd_result),
            "recipe_ack_seq": self.recipe_ack_seq,
            "recipe_result": int(self.recipe_result),
            "alarm": max(self.alarms, default=0),
            "cell_flags": CELL_FLAG_INSPECTING if self.inspecting else 0,
            "active_recipe": self.announced_plan.recipe_number,
            "recipe_from_part": self.recipe_from_part,
            "contract_version": CONTRACT_VERSION,
        }

    def in_flight(self) -> int:
        return len(self.parts)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


__all__ = [
    "Action",
    "Alarm",
    "AlarmCode",
    "CellCore",
    "CellPlan",
    "DropFrame",
    "Infer",
    "RecipeRequest",
    "RecordPart",
    "StateChanged",
    "WriteVerdict",
    "signed_diff",
]  # fmt: skip
