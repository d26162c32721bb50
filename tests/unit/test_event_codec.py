"""The cell's events read back from their plain JSON form, as the OPC UA server's process gets them."""

from __future__ import annotations

import json
import math

import pytest

from controller.contract import RecipeResult, State
from controller.core.packml import StateChanged
from controller.events import (
    AlarmCleared,
    AlarmRaised,
    LinkDown,
    LinkUp,
    RecipeActivated,
    RecipeRefused,
    to_dict,
)
from controller.plant.event_codec import EventDecodeError, event_from_dict
from tests.unit.test_opcua_model import part

EVENTS = [
    part(),
    StateChanged(State.IDLE, State.STARTING, "start", "opcua", time=1.5),
    AlarmRaised(3, "PLC_LINK_LOST", "link lost", 2, time=2.0),
    AlarmCleared(3, "PLC_LINK_LOST", "link lost", 4),
    RecipeActivated("opcua", "bottle", "abc", RecipeResult.ACTIVE, "from part 41", "can", "def"),
    RecipeRefused("api", "bad", "", RecipeResult.INVALID, "no model\nno threshold"),
    LinkUp("connected", time=3.0),
    LinkDown("timeout"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_kind_reads_back_from_its_json_form(event: object) -> None:
    assert event_from_dict(json.loads(json.dumps(to_dict(event)))) == event  # type: ignore[arg-type]


def test_a_float_that_was_not_finite_reads_back_as_nan() -> None:
    plain = json.loads(json.dumps(to_dict(part())))
    plain["views"][0]["scores"] = [None, 0.5]
    back = event_from_dict(plain)
    assert math.isnan(back.views[0].scores[0]) and back.views[0].scores[1] == 0.5  # type: ignore[union-attr]


def test_what_is_not_an_event_is_one_line() -> None:
    with pytest.raises(EventDecodeError, match=r"^unknown event type 'nope'$"):
        event_from_dict({"type": "nope"})
    with pytest.raises(EventDecodeError, match=r"^link_down: TypeError: .*why"):
        event_from_dict({"type": "link_down"})
    with pytest.raises(EventDecodeError, match=r"^state_changed: .*from_state: 'nowhere'"):
        event_from_dict(
            {"type": "state_changed", "from_state": "nowhere", "to_state": "idle", "trigger": "x"}
        )


def test_a_field_of_the_wrong_type_is_refused_not_passed_on() -> None:
    # An alarm code that came as a name would reach the OPC UA server's sorted alarm codes.
    plain = to_dict(AlarmRaised(14, "ENCODER_STEP", "encoder stepped", time=1.0))
    with pytest.raises(EventDecodeError, match=r"alarm_raised: .*code: expected int, found 'encoder_step'"):
        event_from_dict(plain | {"code": "encoder_step"})
    with pytest.raises(EventDecodeError, match=r"alarm_raised: .*text: expected str, found 5"):
        event_from_dict(plain | {"text": 5})
    assert event_from_dict(json.loads(json.dumps(plain))) == AlarmRaised(
        14, "ENCODER_STEP", "encoder stepped", time=1.0
    )
