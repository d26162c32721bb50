"""The MQTT topic and payload contract, version 1: topic names, envelope, retained kinds."""

from __future__ import annotations

import json

import pytest

from controller.contract import RecipeResult, Verdict
from controller.core.packml import State, StateChanged
from controller.core.types import ReasonCode, ViewStatus
from controller.events import (
    EVENTS_VERSION,
    AlarmCleared,
    AlarmRaised,
    LinkDown,
    LinkUp,
    PartRecorded,
    RecipeActivated,
    RecipeRefused,
    ViewOutcome,
)
from controller.plant.messages import (
    CARRIES_EVENTS_VERSION,
    CONTRACT_VERSION,
    Topics,
    event_message,
    iso_time,
    online_message,
    status_message,
)

TOPICS = Topics("acme", "plant1", "pack", "line2", "cell3")
ROOT = "acme/v1/plant1/pack/line2/cell3"


def part(part_id: int = 7, time: float | None = 1_700_000_000.25) -> PartRecorded:
    view = ViewOutcome(
        "top", ViewStatus.OK, ReasonCode.NONE, (0.93,), ("scratch",), (("scratch", 1, 2, 3, 4),)
    )
    return PartRecorded(
        part_id, "run-1", 1, Verdict.FAIL, ReasonCode.DEFECT, ("top:scratch",), True, (view,), 12.5,
        "bracket", 7, "r" * 64, "m" * 64, True, (), time=time,
    )  # fmt: skip


def test_the_contract_carries_event_contract_version_1() -> None:
    # A new event contract changes the payloads under `data`: the MQTT contract's version must follow.
    assert CONTRACT_VERSION == 1 and CARRIES_EVENTS_VERSION == EVENTS_VERSION == 1


def test_a_part_message_has_the_envelope_and_every_field_of_the_result() -> None:
    m = event_message(TOPICS, part(), "s1", 5, lot="L-2026-11")
    assert m.topic == f"{ROOT}/part" and not m.retain
    body = json.loads(m.payload)
    assert list(body) == ["v", "type", "stream", "seq", "time", "cell", "data"]
    assert body["v"] == 1 and body["type"] == "part_recorded" and (body["stream"], body["seq"]) == ("s1", 5)
    assert body["time"] == "2023-11-14T22:13:20.250Z"
    assert body["cell"] == {"site": "plant1", "area": "pack", "line": "line2", "cell": "cell3"}
    data = body["data"]
    assert data["part_id"] == 7 and data["verdict"] == "fail" and data["reasons"] == ["top:scratch"]
    assert data["views"][0]["scores"] == [0.93] and data["views"][0]["regions"] == [["scratch", 1, 2, 3, 4]]
    assert data["recipe_hash"] == "r" * 64 and data["model_hash"] == "m" * 64
    assert (data["run"], data["lot"], data["time"]) == ("run-1", "L-2026-11", 1_700_000_000.25)


@pytest.mark.parametrize(
    ("event", "kind", "retain", "type_"),
    [
        (StateChanged(State.IDLE, State.EXECUTE, "start", "plc"), "state", True, "state_changed"),
        (AlarmRaised(3, "PLC_LINK_LOST", "PLC link lost"), "alarm", False, "alarm_raised"),
        (AlarmCleared(3, "PLC_LINK_LOST", "PLC link lost", 2), "alarm", False, "alarm_cleared"),
        (RecipeActivated("plc", "b", "r", RecipeResult.ACTIVE, "part 9"), "recipe", True, "recipe_activated"),
        (RecipeRefused("cli", "x", "", RecipeResult.INVALID, "unknown"), "recipe", False, "recipe_refused"),
        (LinkUp("connected"), "link", True, "link_up"),
        (LinkDown("timeout"), "link", True, "link_down"),
    ],
)  # fmt: skip
def test_each_event_kind_has_its_topic_and_retained_flag(
    event: object, kind: str, retain: bool, type_: str
) -> None:
    m = event_message(TOPICS, event, "s", 1, now=1.0)  # type: ignore[arg-type]
    body = json.loads(m.payload)
    assert (m.topic, m.retain, body["type"]) == (f"{ROOT}/{kind}", retain, type_)
    assert body["time"] == "1970-01-01T00:00:01.000Z"  # the outlet had not stamped it: `now`


def test_status_and_online_messages_are_retained_and_json_safe() -> None:
    s = status_message(TOPICS, 0.0, {"rate": float("nan"), "p99_ms": 3.5, "obj": object}, {"connected": True})
    body = json.loads(s.payload)
    assert s.topic == f"{ROOT}/status" and s.retain and "seq" not in body
    assert body["data"]["cell"]["rate"] is None and body["data"]["cell"]["p99_ms"] == 3.5
    assert body["data"]["mqtt"] == {"connected": True}
    will = online_message(TOPICS, False, "connection lost", None, "s1")
    body = json.loads(will.payload)
    assert will.topic == f"{ROOT}/online" and will.retain and body["time"] is None
    assert body["data"] == {"online": False, "reason": "connection lost", "stream": "s1"}


def test_times_and_kinds() -> None:
    assert iso_time(float("inf")) is None and iso_time(None) is None
    with pytest.raises(ValueError, match="unknown topic kind"):
        TOPICS.of("parts")
