"""Value types shared by the cell logic: view results and part records."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from controller.contract import AckStatus, ReasonCode, Verdict


class ViewStatus(Enum):
    OK = "ok"
    MISSING = "missing"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


#: Where a defect was found: (class, x, y, w, h) in model-input pixels.
Region = tuple[str, int, int, int, int]


@dataclass(frozen=True, slots=True)
class ViewResult:
    """One camera's inspection of one part. `defects` names the classes over their threshold."""

    camera: str
    status: ViewStatus
    scores: tuple[float, ...] = ()
    defects: tuple[str, ...] = ()
    cause: ReasonCode = ReasonCode.NONE
    regions: tuple[Region, ...] = ()

    @property
    def failed_inspection(self) -> bool:
        return self.status is ViewStatus.OK and bool(self.defects)


@dataclass(slots=True)
class ViewTrace:
    """Timestamps (monotonic s) and outcome of one view of one part."""

    frame_counter: int | None = None
    t_trigger: float | None = None
    t_frame: float | None = None
    t_infer_start: float | None = None
    t_infer_end: float | None = None
    result: ViewResult | None = None


@dataclass(slots=True)
class PartTrack:
    """Everything the cell knows about one part, from the sensor to its disposition."""

    part_id: int
    sensor_count: int
    sensor_pos: int
    t_registered: float
    inspected: bool
    views: dict[str, ViewTrace] = field(default_factory=dict)
    verdict: Verdict = Verdict.NONE
    reason: ReasonCode = ReasonCode.NONE
    reasons: list[str] = field(default_factory=list)
    t_fused: float | None = None
    t_first_write: float | None = None
    t_last_write: float | None = None
    attempts: int = 0
    ack: AckStatus = AckStatus.NONE
    t_acked: float | None = None
    kicked: bool | None = None
    confirmed_removed: bool | None = None
    plc_cause: int | None = None
    t_disposition: float | None = None
    expected_kick: bool | None = None
    alarms: list[str] = field(default_factory=list)
    epoch: int = 0  # bumped when the PLC restarts: part ids start again at 1
    plan: Any = None  # the CellPlan that judges this part (fixed at registration)

    @property
    def last_trigger(self) -> float | None:
        ts = [v.t_trigger for v in self.views.values() if v.t_trigger is not None]
        return max(ts) if ts else None


__all__ = ["PartTrack", "ReasonCode", "Region", "ViewResult", "ViewStatus", "ViewTrace"]
