"""Carrying out the core's actions: verdicts to the PLC, records to the store, frames to the
inference worker or back to their pool, alarms and state changes to the event outlet.

Runs on the control loop. One action that fails (a bug) costs only itself: the rest of its batch
is still carried out, and the failure holds the line with an alarm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from controller.contract import AlarmCode
from controller.core.cell import (
    Action,
    Alarm,
    CellCore,
    DropFrame,
    Infer,
    RecipeRequest,
    RecordPart,
    WriteVerdict,
)
from controller.core.types import PartTrack
from controller.events import EventOutlet, PartRecorded, StateChanged, alarm_event, part_recorded
from controller.records import PartRecord, RecordStore
from controller.service.changeover import Changeover
from controller.service.generations import ModelGenerations
from controller.service.images import ImageKeeper
from controller.service.plc_io import PlcIo
from controller.service.status import CellStatus

log = logging.getLogger("controller.service")  # the service's log lines keep their name


class ActionRunner:
    """Carries out a batch of the core's actions in order (`carry_out`), on the loop; counts the
    control loop's errors (`loop_errors`) and the events that could not be built (`event_errors`)."""

    def __init__(
        self, core: CellCore, plc: PlcIo, images: ImageKeeper, store: RecordStore, status: CellStatus,
        models: ModelGenerations, changeover: Changeover, events: EventOutlet,
    ) -> None:  # fmt: skip
        self.core, self.plc, self.images, self.store, self.status = core, plc, images, store, status
        self.models, self.changeover, self.events = models, changeover, events
        self.loop_errors = 0  # bugs caught on the control loop (each holds the line)
        self.event_errors = 0  # events that could not be built (each logged)

    def carry_out(self, actions: list[Action]) -> None:
        """Carry out the core's actions in order. One that fails (a bug) costs only itself: the
        rest of the batch (other parts' verdicts and records) is still carried out, and the
        failure holds the line with an alarm, as a fault in the core's own handling does."""
        failed = None
        for a in actions:
            try:
                self._carry_out_one(a)
            except Exception as exc:
                failed = self.loop_error(f"carrying out {type(a).__name__}", exc)
        if failed is not None and not self.core.alarm_active(AlarmCode.CONTROL_LOOP_ERROR):
            self.carry_out(self.core.fault(AlarmCode.CONTROL_LOOP_ERROR, failed, time.monotonic()))

    def loop_error(self, doing: str, exc: Exception) -> str:
        """Count a bug met on the control loop while `doing` something, log it (the first, then
        every 1000th; call it inside the `except`), and return the alarm's text."""
        self.loop_errors += 1
        if _worth_logging(self.loop_errors):
            log.exception("control loop error #%d %s", self.loop_errors, doing)
        return f"control loop error {doing}: {type(exc).__name__}: {exc}"[:200]

    def _carry_out_one(self, a: Action) -> None:
        if isinstance(a, WriteVerdict):
            if a.attempt == 1:
                self._decided(a.part_id)
            if not self.plc.queue_verdict(a, self.core.track_of(a.part_id), self.images.kept(a.part_id)):
                self.core.verdict_queue_full()  # counted; the core repeats unacked verdicts
        elif isinstance(a, RecordPart):
            t = a.part
            self.store.put_part(PartRecord(t, self.images.take(t.part_id)))
            self.status.part_recorded(t, time.monotonic())
            self._announce(self._part_event, t)
        elif isinstance(a, RecipeRequest):
            self.changeover.request_from_plc(a.seq, a.number)
        elif isinstance(a, Alarm):
            self.store.put_alarm(a.code, a.text)  # raised once per episode; cleared with a count
            self._announce(alarm_event, a)
        elif isinstance(a, StateChanged):
            self.events.publish(a)
        elif isinstance(a, Infer):
            frame = self.images.lend(a.token)
            if frame is not None:  # lent to the worker; it comes back with the view's result
                self.models.of(self.core.generation_of(a.part_id)).worker.submit(a.part_id, frame)
        elif isinstance(a, DropFrame):
            self.images.release(a.token)

    def _part_event(self, t: PartTrack) -> PartRecorded:
        return part_recorded(t, run=self.store.segment(t.epoch))

    def _announce(self, make: Callable[..., Any], *args: Any) -> None:
        """Build one event and publish it. A fault in building it costs that event only, never
        the actions after it in the batch nor the cycle's header (logged, then every 1000th)."""
        try:
            event = make(*args)
        except Exception:
            self.event_errors += 1
            if _worth_logging(self.event_errors):
                log.exception("event #%d not published: building it failed", self.event_errors)
            return
        self.events.publish(event)

    def _decided(self, part_id: int) -> None:
        """The part's first verdict: its images kept by its own recipe's policy, frames released."""
        track = self.core.track_of(part_id)
        if track is None:
            self.images.decide(part_id, None, None)
        else:
            self.images.decide(part_id, track.verdict, self.models.of(track.plan.generation).recipe.images)


def _worth_logging(count: int) -> bool:
    """A fault that repeats is logged the first time, then every 1000th: the log stays readable."""
    return count == 1 or count % 1000 == 0
