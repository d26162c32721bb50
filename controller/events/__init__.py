"""The cell's event outlet and its events: see `outlet` for what a subscriber may assume.

The service publishes what the core hands out (StateChanged as is; `part_recorded` for each
RecordPart, `alarm_event` for each Alarm) and what it sees itself (`recipe_event`, LinkUp,
LinkDown) to one EventOutlet; the status, the console, MQTT and OPC UA subscribe to it.
"""

from controller.events.outlet import DEFAULT_QUEUE_SIZE, EventOutlet, SubscriberFigures
from controller.events.types import (
    EVENT_TYPES,
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
    ViewOutcome,
    alarm_event,
    part_recorded,
    recipe_event,
    to_dict,
)

__all__ = [
    "DEFAULT_QUEUE_SIZE", "EVENTS_VERSION", "EVENT_TYPES", "AlarmCleared", "AlarmRaised", "Event",
    "EventOutlet", "LinkDown", "LinkUp", "PartRecorded", "RecipeActivated", "RecipeRefused",
    "StateChanged", "SubscriberFigures", "ViewOutcome", "alarm_event", "part_recorded",
    "recipe_event", "to_dict",
]  # fmt: skip
