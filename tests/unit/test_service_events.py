"""The service's event outlet: what a subscriber sees, in order, and that a slow one costs nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from controller.config import load_cell_config
from controller.contract import AlarmCode, RecipeResult, Verdict
from controller.core.cell import RecordPart
from controller.core.packml import Command, State
from controller.core.types import PartTrack, ReasonCode
from controller.events import AlarmRaised, Event, PartRecorded, RecipeRefused, StateChanged
from controller.interfaces import CameraStats
from controller.recipes import load_recipe
from controller.service import CellService

ROOT = Path(__file__).resolve().parents[2]


def service(tmp_path: Path) -> CellService:
    """A service with no PLC and cameras that only say they are connected (never started)."""
    cell = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    cell = cell.model_copy(update={"cameras": cell.cameras[:3]})
    recipe = load_recipe(ROOT / "recipes/plate-4h.yaml")
    cams = {c.name: SimpleNamespace(stats=CameraStats(connected=True)) for c in cell.cameras}
    return CellService(cell, recipe, ROOT / "recipes", SimpleNamespace(), cams, "t", tmp_path)  # type: ignore[arg-type]


def finished(svc: CellService, part_id: int, verdict: Verdict = Verdict.PASS) -> RecordPart:
    track = PartTrack(part_id, part_id * 100, part_id * 100, 0.0, inspected=True, plan=svc.active.plan)
    track.verdict, track.reason = verdict, ReasonCode.NONE
    return RecordPart(track)


def test_a_subscriber_sees_a_state_change_a_part_and_an_alarm_in_order(tmp_path: Path) -> None:
    svc = service(tmp_path)
    seen: list[Event] = []
    svc.events.subscribe("watch", seen.append)
    assert svc.command(Command.RESET) is None  # goes out at once, not with the next PLC cycle
    assert svc.state is State.RESETTING and svc.in_flight() == 0 and svc.counters.as_dict() == {}
    svc.actions.carry_out([finished(svc, 7, Verdict.FAIL)])
    svc.actions.carry_out(svc.core.raise_alarm(AlarmCode.IMAGES_NOT_SAVED, "images not saved: disk full"))
    figures = svc.snapshot().events
    assert set(figures) == {"watch"} and figures["watch"]["queued"] + figures["watch"]["delivered"] == 3
    final = svc.events.close()
    assert [type(e) for e in seen] == [StateChanged, PartRecorded, AlarmRaised]
    change, part, alarm = seen
    assert isinstance(change, StateChanged) and (change.from_state, change.to_state) == (
        State.STOPPED,
        State.RESETTING,
    )
    assert isinstance(part, PartRecorded) and (part.part_id, part.verdict, part.run) == (7, Verdict.FAIL, "t")
    assert part.recipe == svc.recipe.name and part.recipe_hash == svc.recipe_hash
    assert isinstance(alarm, AlarmRaised) and alarm.code == AlarmCode.IMAGES_NOT_SAVED
    assert all(e.time is not None for e in seen)  # stamped by the outlet
    assert final["watch"].delivered == 3 and final["watch"].dropped == 0


def test_a_blocked_subscriber_does_not_slow_the_control_loop(tmp_path: Path) -> None:
    svc = service(tmp_path)
    gate = threading.Event()

    def block(event: Event) -> None:
        gate.wait(5.0)

    svc.events.subscribe("stuck", block, queue_size=4)
    fast: list[Event] = []
    svc.events.subscribe("fast", fast.append)
    t0 = time.perf_counter()
    for pid in range(1, 201):
        svc.actions.carry_out([finished(svc, pid)])
    took = time.perf_counter() - t0
    stuck = svc.events.figures()["stuck"]
    assert stuck.dropped >= 200 - 4 - 1  # its queue, and the one it is stuck in
    assert took < 0.5, f"200 parts took {took:.3f} s with a subscriber that blocks"
    gate.set()
    final = svc.events.close()
    assert final["fast"].delivered == 200 and final["fast"].dropped == 0  # the others miss nothing
    assert len(fast) == 200


def test_a_refused_recipe_is_published_beside_its_audit(tmp_path: Path) -> None:
    svc = service(tmp_path)
    seen: list[Event] = []
    svc.events.subscribe("watch", seen.append)
    result, _ = asyncio.run(svc.activate_recipe("api", name="no-such-recipe"))
    svc.events.close()
    assert result is RecipeResult.UNKNOWN_RECIPE
    assert [type(e) for e in seen] == [RecipeRefused]
    refused = seen[0]
    assert isinstance(refused, RecipeRefused)
    assert (refused.source, refused.name, refused.previous) == ("api", "no-such-recipe", svc.recipe.name)


def test_an_event_that_cannot_be_built_costs_only_itself(tmp_path: Path, monkeypatch: Any) -> None:
    import controller.service.actions as carrying_out

    svc = service(tmp_path)
    seen: list[Event] = []
    svc.events.subscribe("watch", seen.append)

    def broken(*args: Any, **kwargs: Any) -> PartRecorded:
        raise ValueError("a field the event cannot take")

    monkeypatch.setattr(carrying_out, "part_recorded", broken)
    # The part's record, and the alarm after it in the same batch, still happen.
    svc.actions.carry_out([finished(svc, 7), *svc.core.raise_alarm(AlarmCode.IMAGES_NOT_SAVED, "disk full")])
    svc.events.close()
    assert svc.event_errors == 1
    assert [type(e) for e in seen] == [AlarmRaised]
    assert svc.core.alarm_active(AlarmCode.IMAGES_NOT_SAVED)


def test_a_state_change_says_who_commanded_it(tmp_path: Path) -> None:
    svc = service(tmp_path)
    seen: list[Event] = []
    svc.events.subscribe("watch", seen.append)
    assert svc.command(Command.RESET) is None
    svc.core.sm.complete_acting()  # Resetting → Idle
    assert svc.command(Command.STOP, source="opcua") is None
    svc.events.close()
    causes = [(e.trigger, e.cause) for e in seen if isinstance(e, StateChanged)]
    assert causes[0] == ("reset", "api") and causes[-1] == ("stop", "opcua"), causes
