"""The core's counters, typed: one family per kind of thing counted, by verdict, cause or camera.

`as_dict()` gives them the flat names the status API, `cellctl status --json` and the demo's
JSON have always shown ("parts", "verdict:pass", "no_decision:deadline", "missing_frame:top",
...): that form is for people and files, never to be parsed back; readers in code use the
families and accessors here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from controller.contract import AlarmCode, DispositionCause, ReasonCode, Verdict


class Count(Enum):
    """Plain counters: the value is the serialised name."""

    PARTS = "parts"  # parts the PLC registered (tracked or not)
    IMPRECISE_ENCODER_SAMPLES = "imprecise_encoder_samples"  # reads too slow to time the encoder by
    FRAME_BEFORE_ENCODER = "frame_before_encoder"  # a frame before any encoder position
    LATE_RESULT = "late_result"  # a view's result after its part was decided
    VERDICT_REPEATS = "verdict_repeats"  # verdicts written again for want of an echo
    VERDICT_LATE_AT_PLC = "verdict_late_at_plc"  # the PLC echoed a verdict as late
    VERDICT_QUEUE_FULL = "verdict_queue_full"  # the owner could not queue a verdict write
    MISROUTE = "misroute"  # the PLC's kick differs from the verdict
    REJECT_NOT_CONFIRMED = "reject_not_confirmed"  # kicked, but not confirmed removed
    DISPO_BEFORE_CONNECT = "dispo_before_connect"  # a disposition of a part from before the first read
    TRIGGER_RING_OVERRUN = "trigger_ring_overrun"  # trigger records overwritten before read
    TRIGGER_BAD_CAMERA = "trigger_bad_camera"  # a trigger record for a camera index not configured


class FrameFate(Enum):
    """What became of a camera's view of a part, other than a frame inferred in time: the value
    is the serialised name's prefix (`missing_frame:<camera>`)."""

    MISSING = "missing_frame"  # no frame came for an expected trigger
    EXTRA = "extra_frame"  # a frame for no expected trigger
    LATE = "late_frame"  # a frame for a part already decided
    AMBIGUOUS = "ambiguous_frame"  # a frame that could belong to two parts
    MATCHED_DECIDED = "matched_frame"  # matched a trigger whose part is no longer undecided
    INFERENCE_OVERRUN = "inference_overrun"  # its frame came; inference did not end by the decision


@dataclass
class Counters:
    """Everything the core counts, by family. Mutated by the core only; others read."""

    plain: Counter[Count] = field(default_factory=Counter)
    verdicts: Counter[Verdict] = field(default_factory=Counter)
    no_decision: Counter[ReasonCode] = field(default_factory=Counter)  # NO_DECISION verdicts by cause
    frames: Counter[tuple[str, FrameFate]] = field(default_factory=Counter)  # (camera, fate)
    view_failures: Counter[ReasonCode] = field(default_factory=Counter)  # views not OK, by cause
    plc_data: Counter[AlarmCode] = field(default_factory=Counter)  # PLC data not trusted, by alarm
    plc_rejects: Counter[DispositionCause] = field(default_factory=Counter)  # PLC kicked: no/late verdict
    trigger_resyncs: Counter[str] = field(default_factory=Counter)  # trigger pairing locked again, by camera

    def add(self, name: Count, n: int = 1) -> None:
        self.plain[name] += n

    def __getitem__(self, name: Count) -> int:
        return self.plain[name]

    def frame(self, camera: str, fate: FrameFate) -> None:
        """One more view of `camera` that came to `fate`."""
        self.frames[camera, fate] += 1

    def frames_of(self, camera: str, fate: FrameFate) -> int:
        return self.frames[camera, fate]

    def of_fate(self, fate: FrameFate) -> int:
        """Views that came to `fate`, every camera's."""
        return sum(n for (_, f), n in self.frames.items() if f is fate)

    def rejects_by_reason(self) -> dict[str, int]:
        """Rejected parts by why, as the status shows them: each NO_DECISION cause by its
        lower-case name, failed inspections as "defect"; only those that happened."""
        out = {reason.name.lower(): n for reason, n in self.no_decision.items() if n}
        if self.verdicts[Verdict.FAIL]:
            out["defect"] = self.verdicts[Verdict.FAIL]
        return out

    def as_dict(self, verdicts: bool = True) -> dict[str, int]:
        """The flat, JSON-able form under the names shown since counters were strings; sorted.
        `verdicts=False` leaves out the `verdict:*` ones (for a report that shows them apart)."""
        out: dict[str, int] = {}
        out.update((k.value, n) for k, n in self.plain.items())
        if verdicts:
            out.update((f"verdict:{v.name.lower()}", n) for v, n in self.verdicts.items())
        out.update((f"no_decision:{r.name.lower()}", n) for r, n in self.no_decision.items())
        out.update((f"{fate.value}:{cam}", n) for (cam, fate), n in self.frames.items())
        out.update((f"view_{r.name.lower()}", n) for r, n in self.view_failures.items())
        out.update((f"plc_data:{c.name.lower()}", n) for c, n in self.plc_data.items())
        out.update((f"plc_reject:{c.name.lower()}", n) for c, n in self.plc_rejects.items())
        out.update((f"trigger_resync:{cam}", n) for cam, n in self.trigger_resyncs.items())
        return dict(sorted(out.items()))


__all__ = ["Count", "Counters", "FrameFate"]
