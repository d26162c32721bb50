"""The MQTT topic and payload contract, version 1: topic names and JSON bodies (pure).

Topics: `<prefix>/v1/<site>/<area>/<line>/<cell>/<kind>`, kinds in `KINDS`. Every body is one
JSON object, the envelope: `v` (this contract's version), `type`, `time` (ISO 8601 UTC),
`cell` (the four levels) and `data`; event messages also carry `stream` and `seq`, the
at-least-once marker (a consumer drops a message whose `seq` it has seen for that `stream`).
The README's "Plant connection: MQTT" section is the reader's copy of this contract.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.events import (
    EVENTS_VERSION,
    AlarmCleared,
    AlarmRaised,
    Event,
    LinkDown,
    LinkUp,
    PartRecorded,
    RecipeActivated,
    RecipeRefused,
    StateChanged,
    to_dict,
)

#: Version of this contract: in every body (`v`) and in the topic root (`v1`). The event
#: fields under `data` are the event contract's (`EVENTS_VERSION`): a change there is a new
#: version here too.
CONTRACT_VERSION = 1
#: The event contract this one carries (a unit test holds the two together).
CARRIES_EVENTS_VERSION = EVENTS_VERSION

#: Topic kind of each event and whether it is retained (the current value of that kind).
#: A refused recipe is not retained, so the retained `recipe` stays the active one.
_ROUTES: Mapping[type[Any], tuple[str, bool]] = {
    PartRecorded: ("part", False),
    StateChanged: ("state", True),
    AlarmRaised: ("alarm", False),
    AlarmCleared: ("alarm", False),
    RecipeActivated: ("recipe", True),
    RecipeRefused: ("recipe", False),
    LinkUp: ("link", True),
    LinkDown: ("link", True),
}

#: Every topic kind: the event kinds, then `status` (periodic, retained) and `online`
#: (retained; the broker's last will sets it false).
KINDS = ("part", "state", "alarm", "recipe", "link", "status", "online")


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message to send: its topic, JSON body and whether the broker retains it."""

    topic: str
    payload: bytes
    retain: bool


class Topics:
    """The topic names of one cell."""

    def __init__(self, prefix: str, site: str, area: str, line: str, cell: str) -> None:
        self.levels = {"site": site, "area": area, "line": line, "cell": cell}
        self.root = f"{prefix}/v{CONTRACT_VERSION}/{site}/{area}/{line}/{cell}"

    def of(self, kind: str) -> str:
        """The topic of `kind` (one of KINDS)."""
        if kind not in KINDS:
            raise ValueError(f"unknown topic kind {kind!r}")
        return f"{self.root}/{kind}"


def iso_time(t: float | None) -> str | None:
    """UNIX seconds as ISO 8601 UTC with milliseconds (`2026-11-26T09:18:23.123Z`)."""
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def event_route(event: Event) -> tuple[str, bool]:
    """The topic kind of `event` and whether it is retained."""
    return _ROUTES[type(event)]


def event_message(
    topics: Topics, event: Event, stream: str, seq: int, lot: str | None = None, now: float | None = None
) -> Message:
    """The message of one event: `seq` is its place in the cell's `stream` (from 1, no gaps
    unless the disk queue dropped some). `lot` goes into part messages; `now` is the time
    for an event the outlet did not stamp."""
    kind, retain = event_route(event)
    data = to_dict(event)
    kind_name = data.pop("type")
    if isinstance(event, PartRecorded):
        data["lot"] = lot
    envelope = {
        "v": CONTRACT_VERSION,
        "type": kind_name,
        "stream": stream,
        "seq": seq,
        "time": iso_time(event.time if event.time is not None else now),
        "cell": topics.levels,
        "data": data,
    }
    return Message(topics.of(kind), _body(envelope), retain)


def status_message(
    topics: Topics, now: float, cell: Mapping[str, Any] | None, mqtt: Mapping[str, Any]
) -> Message:
    """The periodic, retained status: the cell's snapshot (what the service passes) and the
    publisher's own figures."""
    envelope = {
        "v": CONTRACT_VERSION,
        "type": "status",
        "time": iso_time(now),
        "cell": topics.levels,
        "data": {"cell": _jsonable(cell) if cell is not None else None, "mqtt": _jsonable(mqtt)},
    }
    return Message(topics.of("status"), _body(envelope), True)


def online_message(topics: Topics, online: bool, reason: str, now: float | None, stream: str) -> Message:
    """The retained `online` message: true on connect; false at a clean stop, or as the last
    will the broker sends when the connection is lost (then `time` is null)."""
    envelope = {
        "v": CONTRACT_VERSION,
        "type": "online",
        "time": iso_time(now),
        "cell": topics.levels,
        "data": {"online": online, "reason": reason, "stream": stream},
    }
    return Message(topics.of("online"), _body(envelope), True)


def _jsonable(value: Any) -> Any:
    """A snapshot made JSON-safe: mappings, sequences and scalars kept, floats that are not
    finite as null, anything else as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


__all__ = [
    "CONTRACT_VERSION", "KINDS", "Message", "Topics", "event_message", "event_route", "iso_time",
    "online_message", "status_message",
]  # fmt: skip
