"""The cell's events: built from what the core hands out, each with a stable plain JSON form."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from controller.contract import AlarmCode, DispositionCause, RecipeResult, Verdict
from controller.core.cell import Alarm, CellPlan, RecordPart
from controller.core.packml import State, StateChanged
from controller.core.types import PartTrack, ReasonCode, ViewResult, ViewStatus, ViewTrace
from controller.events import (
    EVENT_TYPES,
    AlarmCleared,
    AlarmRaised,
    Event,
    LinkDown,
    LinkUp,
    RecipeActivated,
    RecipeRefused,
    alarm_event,
    part_recorded,
    recipe_event,
    to_dict,
)
from tests.unit.test_cell import Rig, inspect_part

PLAN = CellPlan(
    cameras=("top", "side"),
    camera_offsets={"top": 100, "side": 200},
    decision_offset=300,
    deadline_offset=400,
    reject_offset=500,
    confirm_offset=600,
    match_tolerance=10,
    recipe_name="bracket",
    recipe_number=7,
    recipe_hash="r" * 64,
    model_hash="m" * 64,
)


def finished_track() -> PartTrack:
    """A part failed on one view, written 12.5 ms after its last trigger, kicked."""
    t = PartTrack(part_id=42, sensor_count=1000, sensor_pos=1000, t_registered=1.0, inspected=True, plan=PLAN)
    t.epoch = 1
    t.views["top"] = ViewTrace(3, 1.100, 1.104, 1.105, 1.109, ViewResult("top", ViewStatus.OK, (0.01,)))
    region = ("scratch", 1, 2, 3, 4)
    side = ViewResult("side", ViewStatus.OK, (0.93, float("nan")), ("scratch",), regions=(region,))
    t.views["side"] = ViewTrace(4, 1.200, 1.204, 1.205, 1.210, side)
    t.verdict, t.reason, t.reasons = Verdict.FAIL, ReasonCode.DEFECT, ["side:scratch"]
    t.t_fused, t.t_first_write = 1.211, 1.2125
    t.kicked, t.alarms = True, ["reject_not_confirmed"]
    return t


def test_a_finished_part_becomes_part_recorded_with_its_plain_form() -> None:
    ev = part_recorded(finished_track(), run="run-1+1", image_hashes={"side": "ab" * 32})
    ev = dataclasses.replace(ev, time=1700000000.5)
    d = to_dict(ev)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d == {
        "type": "part_recorded",
        "part_id": 42,
        "run": "run-1+1",
        "epoch": 1,
        "verdict": "fail",
        "reason": "defect",
        "reasons": ["side:scratch"],
        "inspected": True,
        "views": [
            {
                "camera": "top", "status": "ok", "cause": "none", "scores": [0.01], "defects": [],
                "regions": [], "image_sha256": None,
            },
            {
                "camera": "side", "status": "ok", "cause": "none", "scores": [0.93, None],
                "defects": ["scratch"], "regions": [["scratch", 1, 2, 3, 4]], "image_sha256": "ab" * 32,
            },
        ],
        "latency_ms": d["latency_ms"],
        "recipe": "bracket",
        "recipe_number": 7,
        "recipe_hash": "r" * 64,
        "model_hash": "m" * 64,
        "kicked": True,
        "alarms": ["reject_not_confirmed"],
        "time": 1700000000.5,
    }  # fmt: skip
    assert abs(d["latency_ms"] - 12.5) < 1e-6  # last trigger (side, 1.200) to the first write


def test_a_part_never_inspected_has_no_views_and_no_latency() -> None:
    t = PartTrack(part_id=5, sensor_count=0, sensor_pos=0, t_registered=0.0, inspected=False, plan=None)
    t.verdict, t.reason, t.reasons = Verdict.NO_DECISION, ReasonCode.NOT_INSPECTING, ["not_inspecting"]
    d = to_dict(part_recorded(t))
    assert (d["views"], d["latency_ms"], d["recipe_hash"], d["kicked"]) == ([], None, "", None)
    assert (d["verdict"], d["reason"], d["time"]) == ("no_decision", "not_inspecting", None)


def test_a_view_without_result_says_so() -> None:
    t = finished_track()
    t.views["side"] = ViewTrace()
    (_, side) = part_recorded(t).views
    assert (side.status, side.cause, side.scores) == (None, ReasonCode.NONE, ())


def test_part_recorded_from_the_cores_record_matches_the_part() -> None:
    rig = Rig()
    rig.execute()
    inspect_part(rig, 1, 0.1, "scratch")
    rig.plc.dispo(1, kicked=True, removed=True, cause=DispositionCause.VERDICT_REJECT)
    rig.tick()
    (rec,) = [a for a in rig.actions if isinstance(a, RecordPart)]
    ev = part_recorded(rec.part, run="r")
    assert (ev.part_id, ev.verdict, ev.kicked) == (1, Verdict.FAIL, True)
    assert [v.camera for v in ev.views] == ["a", "b"] and ev.latency_ms is not None and ev.latency_ms > 0


def test_alarms_become_raised_and_cleared() -> None:
    raised = alarm_event(Alarm(AlarmCode.PLC_LINK_LOST, "PLC link lost: reset"))
    cleared = alarm_event(Alarm(AlarmCode.PLC_LINK_LOST, "cleared after 3 occurrences", True, 3))
    assert raised == AlarmRaised(13, "PLC_LINK_LOST", "PLC link lost: reset", 1)
    assert cleared == AlarmCleared(13, "PLC_LINK_LOST", "cleared after 3 occurrences", 3)
    assert alarm_event(Alarm(99, "?")).name == "99"  # a code this build does not know
    # The code goes out as its number, not the enum's name (a plant reads `code` as a number).
    assert type(raised.code) is int and to_dict(raised)["code"] == 13 and to_dict(cleared)["code"] == 13


def test_recipe_changes_become_activated_or_refused() -> None:
    ok = recipe_event("plc", "bracket", "h1", RecipeResult.ACTIVE, "judges parts from 12 on", "old", "h0")
    no = recipe_event("api", "nope", "", RecipeResult.UNKNOWN_NUMBER, "no recipe nope", "old", "h0")
    assert isinstance(ok, RecipeActivated) and isinstance(no, RecipeRefused)
    assert to_dict(no) == {
        "type": "recipe_refused", "source": "api", "name": "nope", "recipe_hash": "",
        "result": "unknown_number", "reason": "no recipe nope", "previous": "old", "previous_hash": "h0",
        "time": None,
    }  # fmt: skip


def test_every_kind_has_a_stable_type_and_a_json_form() -> None:
    samples: list[Event] = [
        part_recorded(finished_track()),
        StateChanged(State.EXECUTE, State.HOLDING, "hold", "alarm PLC_LINK_LOST", time=2.0),
        AlarmRaised(10, "PLC_HEARTBEAT_LOST", "PLC heartbeat stopped changing"),
        AlarmCleared(10, "PLC_HEARTBEAT_LOST", "cleared after 1 occurrence", 1),
        recipe_event("cli", "a", "h", RecipeResult.ACTIVE, "now"),
        recipe_event("cli", "a", "", RecipeResult.NOT_SAFE, "not in a safe state"),
        LinkUp("connected to 127.0.0.1:102"),
        LinkDown("connection reset"),
    ]
    assert {type(e) for e in samples} == set(typing.get_args(Event)) == set(EVENT_TYPES)
    types = [to_dict(e)["type"] for e in samples]
    assert types == [
        "part_recorded", "state_changed", "alarm_raised", "alarm_cleared", "recipe_activated",
        "recipe_refused", "link_up", "link_down",
    ]  # fmt: skip
    for e in samples:
        json.dumps(to_dict(e), allow_nan=False)
    assert to_dict(samples[1]) == {
        "type": "state_changed", "from_state": "execute", "to_state": "holding", "trigger": "hold",
        "cause": "alarm PLC_LINK_LOST", "time": 2.0,
    }  # fmt: skip
    assert to_dict(samples[2]) == {
        "type": "alarm_raised", "code": 10, "name": "PLC_HEARTBEAT_LOST",
        "text": "PLC heartbeat stopped changing", "count": 1, "time": None,
    }  # fmt: skip
    assert to_dict(samples[7]) == {"type": "link_down", "why": "connection reset", "time": None}


def test_events_are_frozen() -> None:
    ev = LinkDown("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.why = "y"  # type: ignore[misc]
