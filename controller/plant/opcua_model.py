"""What the OPC UA server shows, as plain values: no asyncua, no I/O, unit-tested alone.

The server (`opcua_server`) builds its nodes from the declarations here and writes the values
`CellView` works out from the cell's events and status snapshots. The mapping follows OPC 40100-1
(machine vision) and OPC 30050 (PackML PackTags) where they fit; README says where it differs.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from controller.contract import State
from controller.events import (
    AlarmCleared,
    AlarmRaised,
    Event,
    LinkDown,
    LinkUp,
    PartRecorded,
    RecipeActivated,
    StateChanged,
    to_dict,
)
from controller.snapshot import StatusSnapshot

#: PackML state → (OPC 40100-1 vision state, its Operational substate; "" outside Operational).
#: Acting states take the state they lead to, except Clearing, which is still leaving Aborted.
VISION_STATES: dict[State, tuple[str, str]] = {
    State.UNDEFINED: ("Preoperational", ""),
    State.STOPPED: ("Halted", ""),
    State.STOPPING: ("Halted", ""),
    State.COMPLETE: ("Halted", ""),
    State.ABORTING: ("Error", ""),
    State.ABORTED: ("Error", ""),
    State.CLEARING: ("Error", ""),
    State.RESETTING: ("Operational", "Initialized"),
    State.IDLE: ("Operational", "Ready"),
    State.STARTING: ("Operational", "Ready"),
    State.COMPLETING: ("Operational", "Ready"),
    State.HOLDING: ("Operational", "Ready"),
    State.HELD: ("Operational", "Ready"),
    State.UNHOLDING: ("Operational", "Ready"),
    State.SUSPENDING: ("Operational", "Ready"),
    State.SUSPENDED: ("Operational", "Ready"),
    State.UNSUSPENDING: ("Operational", "Ready"),
    State.EXECUTE: ("Operational", "ContinuousExecution"),
}

#: Hex digits of a recipe hash shown in variables and result events (the status snapshot's too).
HASH_DIGITS = 12

#: PackTags UnitModeCurrent: the cell has one mode, Production (PackML mode 1).
UNIT_MODE_PRODUCTION = 1


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable node: the object it sits in, its browse name, its OPC UA type and meaning.

    `type` names an OPC UA built-in type (`String`, `Int32`, ...); `[]` after it: an array."""

    folder: str
    name: str
    type: str
    doc: str


#: Every variable, by the object it sits in (VisionSystem, its state machine, PackTags' Status
#: and Admin). Names are unique across folders: `CellView.values()` keys them by name alone.
VARIABLES: tuple[Variable, ...] = (
    Variable("VisionStateMachine", "CurrentState", "String",
              "OPC 40100 state: Preoperational, Halted, Error or Operational"),
    Variable("VisionStateMachine", "OperationalSubstate", "String",
              "in Operational: Initialized, Ready, ContinuousExecution"),
    Variable("Status", "StateCurrent", "Int32", "PackML state number (0-17)"),
    Variable("Status", "StateCurrentName", "String", "PackML state name"),
    Variable("Status", "UnitModeCurrent", "Int32", "PackML unit mode: 1 Production"),
    Variable("Status", "CurMachSpeed", "Double", "parts per minute, counted over the last 10 s"),
    Variable("Status", "LineSpeedMmS", "Double", "conveyor speed, mm/s"),
    Variable("Status", "LinkUp", "Boolean", "the PLC link is up"),
    Variable("Status", "Ready", "Boolean", "models warm and the line ready to inspect"),
    Variable("Status", "RecipeName", "String", "the active recipe"),
    Variable("Status", "RecipeHash", "String", "its content hash (first 12 hex digits)"),
    Variable("Status", "InFlight", "Int32", "parts between the part sensor and their verdict"),
    Variable("Status", "LatencyP50Ms", "Double", "trigger to verdict written, median (ms)"),
    Variable("Status", "LatencyP99Ms", "Double", "trigger to verdict written, 99th percentile (ms)"),
    Variable("Status", "LastResultId", "String", "ResultId of the newest result"),
    Variable("Admin", "ProdProcessedCount", "Int64",
              "parts judged since the service started: passed + defective (not those in flight)"),
    Variable("Admin", "ProdDefectiveCount", "Int64", "parts rejected: failed or no decision"),
    Variable("Admin", "ProdPassedCount", "Int64", "parts passed"),
    Variable("Admin", "ProdNoDecisionCount", "Int64", "parts rejected without a decision (NO_DECISION)"),
    Variable("Admin", "AlarmCount", "Int32", "active alarms"),
    Variable("Admin", "AlarmIds", "Int32[]", "active alarm codes, lowest first"),
    Variable("Admin", "AlarmMessages", "String[]", "their texts, in the same order"),
)  # fmt: skip

#: The fields of a result-ready event beyond the base event's (name, type, meaning).
RESULT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ResultId", "String", "the result's id: '<run>:<part id>', unique across PLC restarts"),
    ("PartId", "String", "the PLC's part id"),
    ("RunId", "String", "the record store's run (one PLC epoch)"),
    ("RecipeId", "String", "the recipe that judged the part"),
    ("RecipeNumber", "Int32", "its number, as the PLC selects it"),
    ("RecipeHash", "String", "its content hash (first 12 hex digits, as Status/RecipeHash; whole in "
                             "ResultContent)"),
    ("ModelHash", "String", "the model's SHA-256"),
    ("IsSimulated", "Boolean", "the part came from a simulated line"),
    ("Verdict", "String", "pass, fail or no_decision"),
    ("VerdictCode", "Int32", "the verdict's wire value: 1 pass, 2 fail, 3 no decision"),
    ("Reasons", "String[]", "why, one reason an entry"),
    ("Cameras", "String[]", "the views, one camera an entry"),
    ("CameraScores", "Double[]", "each view's highest score, in the order of Cameras (NaN: no result)"),
    ("LatencyMs", "Double", "trigger to verdict written (ms; NaN: unknown)"),
    ("ResultContent", "String", "the whole result as JSON (the event contract's part_recorded)"),
)  # fmt: skip


def vision_state(packml: str) -> tuple[str, str]:
    """The OPC 40100 state and Operational substate for a PackML state name (unknown: Preoperational)."""
    try:
        return VISION_STATES[State[packml.upper()]]
    except KeyError:
        return VISION_STATES[State.UNDEFINED]


def result_id(run: str, part_id: int) -> str:
    """A result's id: the run and the part id, the record store's key."""
    return f"{run}:{part_id}" if run else str(part_id)


def result_fields(event: PartRecorded, simulated: bool) -> dict[str, Any]:
    """The values of a result-ready event's own fields (`RESULT_FIELDS`) for one part."""
    return {
        "ResultId": result_id(event.run, event.part_id),
        "PartId": str(event.part_id),
        "RunId": event.run,
        "RecipeId": event.recipe,
        "RecipeNumber": event.recipe_number,
        "RecipeHash": event.recipe_hash[:HASH_DIGITS],
        "ModelHash": event.model_hash,
        "IsSimulated": simulated,
        "Verdict": event.verdict.name.lower(),
        "VerdictCode": int(event.verdict),
        "Reasons": list(event.reasons),
        "Cameras": [v.camera for v in event.views],
        "CameraScores": [max(v.scores) if v.scores else math.nan for v in event.views],
        "LatencyMs": math.nan if event.latency_ms is None else event.latency_ms,
        "ResultContent": result_content(event, simulated),
    }


def result_content(event: PartRecorded, simulated: bool) -> str:
    """The result as JSON: the event's plain form, with `result_id` and `is_simulated`."""
    plain = to_dict(event)
    plain["result_id"] = result_id(event.run, event.part_id)
    plain["is_simulated"] = simulated
    return json.dumps(plain, separators=(",", ":"), allow_nan=False)


class ResultRing:
    """The newest results by id, at most `size`: what GetResultById can find."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"result ring size must be at least 1, not {size}")
        self.size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def add(self, rid: str, content: str) -> None:
        """Keep `content` under `rid`, forgetting the oldest beyond the size."""
        self._items[rid] = content
        self._items.move_to_end(rid)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, rid: str) -> str | None:
        """The result's content, or None when it is unknown or forgotten."""
        return self._items.get(rid)

    def __len__(self) -> int:
        return len(self._items)


class CellView:
    """The cell as the OPC UA variables show it, kept from events (at once) and snapshots.

    Events move what they name (state, alarms, recipe, link, last result) the moment they
    arrive; the counters, speeds and latencies come from the periodic status snapshot, which
    also corrects anything an event dropped on the way missed."""

    def __init__(self) -> None:
        self.state = State.UNDEFINED
        self.alarms: dict[int, str] = {}
        self.recipe = self.recipe_hash = self.last_result = ""
        self.link_up = self.ready = False
        self.parts = self.passed = self.failed = self.no_decision = self.in_flight = 0
        self.parts_per_min = self.line_speed = self.p50 = self.p99 = 0.0

    def apply_snapshot(self, snap: StatusSnapshot) -> None:
        """Take everything the snapshot says."""
        self.state = _state(snap.state)
        self.alarms = dict(snap.alarms)
        self.recipe, self.recipe_hash = snap.recipe, snap.recipe_hash
        self.link_up, self.ready = snap.link_up, snap.ready
        self.parts, self.passed, self.failed = snap.parts, snap.passed, snap.failed
        self.no_decision, self.in_flight = snap.no_decision, snap.in_flight
        self.parts_per_min, self.line_speed = snap.parts_per_min, snap.line_speed_mm_s
        self.p50, self.p99 = snap.latency_p50_ms, snap.latency_p99_ms

    def apply_event(self, event: Event) -> None:
        """Take what one event says."""
        if isinstance(event, StateChanged):
            self.state = event.to_state
        elif isinstance(event, AlarmRaised):
            self.alarms[event.code] = event.text
        elif isinstance(event, AlarmCleared):
            self.alarms.pop(event.code, None)
        elif isinstance(event, RecipeActivated):
            # the status shows a hash's first 12 digits: so do the variables, whichever came last
            self.recipe, self.recipe_hash = event.name, event.recipe_hash[:HASH_DIGITS]
        elif isinstance(event, LinkUp):
            self.link_up = True
        elif isinstance(event, LinkDown):
            self.link_up = False
        elif isinstance(event, PartRecorded):
            self.last_result = result_id(event.run, event.part_id)

    def values(self) -> dict[str, Any]:
        """Every variable's value by name (`VARIABLES`)."""
        vision, sub = VISION_STATES[self.state]
        codes = sorted(self.alarms)
        return {
            "CurrentState": vision,
            "OperationalSubstate": sub,
            "StateCurrent": int(self.state),
            "StateCurrentName": self.state.name,
            "UnitModeCurrent": UNIT_MODE_PRODUCTION,
            "CurMachSpeed": _finite(self.parts_per_min),
            "LineSpeedMmS": _finite(self.line_speed),
            "LinkUp": self.link_up,
            "Ready": self.ready,
            "RecipeName": self.recipe,
            "RecipeHash": self.recipe_hash,
            "InFlight": self.in_flight,
            "LatencyP50Ms": _finite(self.p50),
            "LatencyP99Ms": _finite(self.p99),
            "LastResultId": self.last_result,
            "ProdProcessedCount": self.passed + self.failed + self.no_decision,
            "ProdDefectiveCount": self.failed + self.no_decision,
            "ProdPassedCount": self.passed,
            "ProdNoDecisionCount": self.no_decision,
            "AlarmCount": len(codes),
            "AlarmIds": codes,
            "AlarmMessages": [self.alarms[c] for c in codes],
        }


def _state(name: str) -> State:
    try:
        return State[name.upper()]
    except KeyError:
        return State.UNDEFINED


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


__all__ = [
    "HASH_DIGITS", "RESULT_FIELDS", "UNIT_MODE_PRODUCTION", "VARIABLES", "VISION_STATES", "CellView",
    "ResultRing", "Variable", "result_content", "result_fields", "result_id", "vision_state",
]  # fmt: skip
