"""The cell's events: immutable values for the event outlet, each with a stable JSON form.

Built from what the core hands out (a finished PartTrack, an Alarm, a StateChanged, which is
the core's own) and what the service knows (recipe changes, the PLC link). Pure: no threads, no
I/O, no clock; `time` is None until the outlet stamps it when the event is published.

`to_dict(event)` gives the plain form MQTT and OPC UA publish: a `type` that names the kind
(stable: renaming one is a breaking change of the event contract, `EVENTS_VERSION`), every
field under its own name, enums as their lower-case names, tuples as lists, floats that are not
finite as null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, fields, is_dataclass
from enum import Enum
from typing import Any

from controller.contract import AlarmCode, RecipeResult, Verdict
from controller.core.cell import Alarm
from controller.core.packml import State, StateChanged
from controller.core.types import PartTrack, ReasonCode, Region, ViewStatus

#: Version of the event contract (the kinds, their fields and their plain form).
EVENTS_VERSION = 1


@dataclass(frozen=True, slots=True)
class ViewOutcome:
    """One camera's view of a recorded part, as the record stores it (no stage times)."""

    camera: str
    status: ViewStatus | None  # None: no result came (the part was not inspected)
    cause: ReasonCode
    scores: tuple[float, ...]
    defects: tuple[str, ...]
    regions: tuple[Region, ...]
    #: SHA-256 of the saved image, where the one who saves it supplies it (the record has none).
    image_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class PartRecorded:
    """A part finished: its verdict, why, each view's outcome, and what judged it.

    `run` is the record store's run id of the part's PLC epoch (`RecordStore.segment(epoch)`);
    (`run`, `part_id`) is the record's key. `latency_ms` is trigger to verdict written (None
    when either is unknown), as the record's `latency_ms`."""

    part_id: int
    run: str
    epoch: int
    verdict: Verdict
    reason: ReasonCode
    reasons: tuple[str, ...]
    inspected: bool
    views: tuple[ViewOutcome, ...]
    latency_ms: float | None
    recipe: str
    recipe_number: int
    recipe_hash: str
    model_hash: str
    kicked: bool | None  # the PLC's disposition; None: none came
    alarms: tuple[str, ...]
    _: KW_ONLY
    time: float | None = None  # wall clock (UNIX s): stamped by the outlet when None


@dataclass(frozen=True, slots=True)
class AlarmRaised:
    """An alarm raised (once per episode: repeats are only counted, shown when it clears)."""

    code: int
    name: str
    text: str
    count: int = 1
    _: KW_ONLY
    time: float | None = None


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """An alarm cleared (Reset, Clear or Unhold); `count`: how often its cause recurred."""

    code: int
    name: str
    text: str
    count: int
    _: KW_ONLY
    time: float | None = None


@dataclass(frozen=True, slots=True)
class RecipeActivated:
    """A recipe change accepted (`reason` says from which part it judges); `previous` it replaced."""

    source: str
    name: str
    recipe_hash: str
    result: RecipeResult
    reason: str
    previous: str = ""
    previous_hash: str = ""
    _: KW_ONLY
    time: float | None = None


@dataclass(frozen=True, slots=True)
class RecipeRefused:
    """A recipe change refused; the active recipe (`previous`) stays. `reason` says why."""

    source: str
    name: str
    recipe_hash: str  # "" when the recipe was never loaded
    result: RecipeResult
    reason: str
    previous: str = ""
    previous_hash: str = ""
    _: KW_ONLY
    time: float | None = None


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The PLC link is up (connected, or back after a loss)."""

    why: str = ""
    _: KW_ONLY
    time: float | None = None


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The PLC link is lost; the PLC rejects every part meanwhile."""

    why: str
    _: KW_ONLY
    time: float | None = None


Event = (
    PartRecorded
    | StateChanged
    | AlarmRaised
    | AlarmCleared
    | RecipeActivated
    | RecipeRefused
    | LinkUp
    | LinkDown
)

#: The `type` of each kind in its plain form: stable names, part of the event contract.
EVENT_TYPES: Mapping[type[Any], str] = {
    PartRecorded: "part_recorded",
    StateChanged: "state_changed",
    AlarmRaised: "alarm_raised",
    AlarmCleared: "alarm_cleared",
    RecipeActivated: "recipe_activated",
    RecipeRefused: "recipe_refused",
    LinkUp: "link_up",
    LinkDown: "link_down",
}


def part_recorded(
    track: PartTrack, run: str = "", image_hashes: Mapping[str, str] | None = None
) -> PartRecorded:
    """The event for a finished part (the core's RecordPart): what its record says.

    `run`: the store's run id for the part's epoch; `image_hashes`: camera → SHA-256 of the
    images kept, where the caller has them."""
    hashes = image_hashes or {}
    views = tuple(
        ViewOutcome(
            camera=cam,
            status=v.result.status if v.result else None,
            cause=v.result.cause if v.result else ReasonCode.NONE,
            scores=v.result.scores if v.result else (),
            defects=v.result.defects if v.result else (),
            regions=v.result.regions if v.result else (),
            image_sha256=hashes.get(cam),
        )
        for cam, v in track.views.items()
    )
    last = track.last_trigger
    latency = (
        (track.t_first_write - last) * 1e3 if last is not None and track.t_first_write is not None else None
    )
    plan = track.plan
    return PartRecorded(
        part_id=track.part_id,
        run=run,
        epoch=track.epoch,
        verdict=track.verdict,
        reason=track.reason,
        reasons=tuple(track.reasons),
        inspected=track.inspected,
        views=views,
        latency_ms=latency,
        recipe=plan.recipe_name if plan is not None else "",
        recipe_number=plan.recipe_number if plan is not None else 0,
        recipe_hash=plan.recipe_hash if plan is not None else "",
        model_hash=plan.model_hash if plan is not None else "",
        kicked=track.kicked,
        alarms=tuple(track.alarms),
    )


def alarm_event(alarm: Alarm) -> AlarmRaised | AlarmCleared:
    """The event for the core's Alarm action (raised, or cleared with its count)."""
    try:
        name = AlarmCode(alarm.code).name
    except ValueError:
        name = str(alarm.code)
    code = int(alarm.code)  # the number, never the enum (its plain form would be its name)
    if alarm.cleared:
        return AlarmCleared(code, name, alarm.text, alarm.occurrences)
    return AlarmRaised(code, name, alarm.text, alarm.occurrences)


def recipe_event(
    source: str,
    name: str,
    recipe_hash: str,
    result: RecipeResult,
    reason: str,
    previous: str = "",
    previous_hash: str = "",
) -> RecipeActivated | RecipeRefused:
    """The event for one recipe change, accepted (ACTIVE) or refused: what the audit row says."""
    kind = RecipeActivated if result is RecipeResult.ACTIVE else RecipeRefused
    return kind(source, name, recipe_hash, result, reason, previous, previous_hash)


def to_dict(event: Event) -> dict[str, Any]:
    """The event's plain, JSON-able form, with its `type` first."""
    out: dict[str, Any] = {"type": EVENT_TYPES[type(event)]}
    out.update(_plain(event))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


__all__ = [
    "EVENTS_VERSION", "EVENT_TYPES", "AlarmCleared", "AlarmRaised", "Event", "LinkDown", "LinkUp",
    "PartRecorded", "RecipeActivated", "RecipeRefused", "State", "StateChanged", "ViewOutcome",
    "alarm_event", "part_recorded", "recipe_event", "to_dict",
]  # fmt: skip
