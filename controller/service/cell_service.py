"""The cell service: wires the core to the PLC I/O loop, cameras, model generations, the image
keeper, status and the record store, hands the core's actions to the `ActionRunner` that carries
them out, and publishes the cell's events (`events`, the outlet publishers subscribe to).

Threads and their roles (all named):
- the asyncio loop owns the `CellCore`; every event reaches it through `call_soon_threadsafe`;
- `plc-io` (`PlcIo`) reads the whole input area once per cycle, writes the header and queued
  verdicts, each batch of them made durable in the verdict journal first (one fdatasync);
- each camera driver's own thread delivers frames; `infer-N-prep` preprocesses views and
  `infer-N` runs batches (N: the recipe generation); `records` writes.
Nothing here blocks the loop; every queue between threads is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from controller.config import CellConfig, Recipe, content_hash
from controller.contract import AlarmCode, RecipeResult, area_layout, cell_header_bytes
from controller.core.cell import CellCore
from controller.core.counters import Counters
from controller.core.packml import Command, State
from controller.core.types import ViewResult
from controller.events import EventOutlet
from controller.inference.runner import OnnxRunner
from controller.inference.worker import Outcome
from controller.interfaces import Camera, Frame, PlcLink
from controller.records import RecordStore
from controller.service.actions import ActionRunner
from controller.service.changeover import Changeover
from controller.service.generations import ModelGenerations, Stack
from controller.service.images import ImageKeeper
from controller.service.plc_io import PlcIo
from controller.service.status import CellStatus
from controller.snapshot import StatusSnapshot

log = logging.getLogger("controller.service")  # the service's log lines keep their name


class CellService:
    """One cell. `run()` until `stop` is set; then drains and flushes."""

    def __init__(
        self,
        cell: CellConfig,
        recipe: Recipe,
        recipe_dir: Path,
        link: PlcLink,
        cameras: dict[str, Camera],
        run_id: str,
        data_dir: Path | None = None,
        drain_timeout_s: float = 5.0,
    ) -> None:
        self.cell, self.link, self.recipe_dir = cell, link, recipe_dir
        self.drain_timeout_s = drain_timeout_s
        self._data_root = data_dir or Path(".")
        missing = [c for c in recipe.cameras if c not in cameras]
        if missing:
            raise ValueError(f"recipe {recipe.name} needs cameras {missing} that the cell does not provide")
        self.cameras = dict(cameras)
        self.layout = area_layout(cell.plc.ring_size)
        #: The cell's events (parts, state, alarms, recipes, the PLC link): publishers subscribe here.
        self.events = EventOutlet()
        self.models = ModelGenerations(cell, recipe, recipe_dir, self._data_root, self._results_from_worker)
        self.core = CellCore(self.active.plan, self.layout)
        root = self._data_root
        database = root / cell.records.database
        journal = database.parent / "journal"
        self.store = RecordStore(database, root / cell.records.images, run_id, journal=journal)
        self.changeover = Changeover(
            cell, recipe_dir, self.cameras, self.core, self.models, self.store, self.events.publish
        )
        self._recipes = self.changeover.recipes
        self._loop: asyncio.AbstractEventLoop | None = None
        self.images = ImageKeeper()
        self.status = CellStatus(self.cameras, cell.encoder.counts_per_mm)
        self.plc = PlcIo(
            link, self.store, cell.plc.cycle_ms / 1000.0, cell.plc.trigger_ring, 4 * self.layout.ring_size,
            cell_header_bytes(state=int(State.STOPPED), active_recipe=recipe.number),
            on_inputs=self._on_inputs, on_written=self.core.verdict_written,
            on_link_lost=self._on_link_lost, on_journal_synced=self.status.journal_synced,
            publish=self.events.publish,
        )  # fmt: skip
        self.actions = ActionRunner(
            self.core, self.plc, self.images, self.store, self.status, self.models, self.changeover,
            self.events,
        )  # fmt: skip
        self._heartbeat = 0
        self._image_errors_seen = 0

    @property
    def active(self) -> Stack:
        return self.models.active

    @property
    def stacks(self) -> dict[int, Stack]:
        return self.models.stacks

    @property
    def recipe(self) -> Recipe:
        return self.active.recipe

    @property
    def recipe_hash(self) -> str:
        return self.active.recipe_hash

    @property
    def runner(self) -> OnnxRunner:
        return self.active.runner

    @property
    def event_errors(self) -> int:
        """Events that could not be built (each logged), so never published."""
        return self.actions.event_errors

    @property
    def link_up(self) -> bool:
        return self.plc.link_up

    @property
    def state(self) -> State:
        """The cell's PackML state."""
        return self.core.state

    @property
    def counters(self) -> Counters:
        """The core's counters (read only; `as_dict()` for their JSON names)."""
        return self.core.counters

    def in_flight(self) -> int:
        """Parts registered and not recorded yet."""
        return self.core.in_flight()

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        """Validate, load and warm a recipe, then switch to it (see `Changeover.activate`)."""
        return await self.changeover.activate(source, name, number)

    # ------------------------------------------------------- PLC, frames, results, records
    def _on_link_lost(self, why: str) -> None:
        self.actions.carry_out(self.core.link_lost(why))

    def _on_inputs(self, snap: np.void, t: float, round_trip: float, triggers: np.void | None = None) -> None:
        self.status.last_inputs = t
        try:
            actions = self.core.on_plc_inputs(snap, t, round_trip, triggers)
        except Exception as exc:  # a bug: it must stop the line visibly, never freeze it silently
            text = self.actions.loop_error("handling PLC data", exc)
            actions = self.core.fault(AlarmCode.CONTROL_LOOP_ERROR, text, t)
        else:
            self.plc.count_progress()
        self.actions.carry_out(actions)
        self._watch_store(t)
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        self.plc.set_header(cell_header_bytes(heartbeat=self._heartbeat, **self.core.header_fields()))

    def _frame_from_camera(self, frame: Frame) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            ImageKeeper.turn_away(frame)
            return
        loop.call_soon_threadsafe(self._on_frame, frame)

    def _on_frame(self, frame: Frame) -> None:
        token = self.images.arrive(frame)  # the keeper owns the buffer; the core gets the token
        act = self.core.on_frame(frame.camera, frame.t_trigger, frame.counter, token, time.monotonic())
        if act is not None:  # None: it waits in the core for its trigger record
            self.actions.carry_out([act])

    def _results_from_worker(self, outcomes: list[Outcome]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the cell is gone: the keeper released every frame at shutdown
        loop.call_soon_threadsafe(self._on_results, outcomes)  # one wake-up per batch, not per view

    def _on_results(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self._on_result(*o)

    def _on_result(self, part_id: int, res: ViewResult, t0: float, t1: float, frame: Frame) -> None:
        if self.core.is_undecided(part_id):
            self.images.hold(part_id, frame)
            self.actions.carry_out(self.core.on_view_result(part_id, res, t0, t1))
        else:
            self.core.on_view_result(part_id, res, t0, t1)  # counted as late
            self.images.release_frame(frame)

    def _watch_store(self, now: float) -> None:
        """Records that cannot be written stop the cell passing parts; lost images are alarmed."""
        st = self.store
        failing = st.failing or self.plc.journal_failing
        if failing is not None and not self.core.alarm_active(AlarmCode.RECORDS_FAILING):
            self.actions.carry_out(self.core.fault(AlarmCode.RECORDS_FAILING, failing[:200], now))
        if st.image_errors != self._image_errors_seen:
            self._image_errors_seen = st.image_errors
            why = ("disk full: " if st.disk_full else "") + st.last_image_error
            alarm = self.core.raise_alarm(AlarmCode.IMAGES_NOT_SAVED, f"images not saved: {why}"[:200])
            self.actions.carry_out(alarm)

    # --------------------------------------------------------- housekeeping, status
    async def _housekeeping(self) -> None:
        """Twice a second: alarm for cameras that are gone; measure rates; retire recipes no part
        depends on."""
        while True:
            await asyncio.sleep(0.5)
            gone = [n for n, cam in self.cameras.items() if not cam.stats.connected]
            self.actions.carry_out(self.core.cameras_absent(gone))
            frames = {n: cam.stats.frames for n, cam in self.cameras.items()}
            self.status.measure_rates(time.monotonic(), self.core.position, frames)
            await self.models.retire(self.core.generations_in_use())

    @property
    def ready(self) -> bool:
        """PLC link, cameras and model all up: what systemd is told as READY."""
        return (
            self.link_up
            and self.core.inference_ready
            and all(cam.stats.connected for cam in self.cameras.values())
        )

    def healthy(self) -> bool:
        """The threads the control loop depends on are alive (checked before petting the watchdog)."""
        return self.plc.is_alive() and self.active.worker.alive

    @property
    def progress(self) -> int:
        """Grows with every PLC cycle handled without error (and every reconnect attempt while
        the link is down): the watchdog is petted only while it grows."""
        return self.plc.progress

    def snapshot(self) -> StatusSnapshot:
        a = self.active
        return self.status.snapshot(
            self.core, self.core.counters, self.cameras, a.recipe.name, a.recipe_hash,
            a.runner.info.provider, self.link_up, self.ready, time.monotonic(), self.events.figures(),
        )  # fmt: skip

    def command(self, cmd: Command, source: str = "api") -> str | None:
        """Apply a local command (CLI, console, OPC UA); its state change goes out at once with
        `source` as its cause. Must be called on the loop. Returns None if accepted, or why it
        was refused."""
        refused = self.core.command(cmd, source)
        self.actions.carry_out(self.core.take_outbox())
        return refused

    def call(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ life
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.start(
            {
                "cell": self.cell.name, "cell_hash": content_hash(self.cell), "recipe": self.recipe.name,
                "recipe_hash": self.recipe_hash, "model_hash": self.runner.info.sha256,
                "provider": self.runner.info.provider,
            }
        )  # fmt: skip
        days = self.recipe.images.retention_days
        if pruned := await asyncio.to_thread(self.store.prune_images, days):
            log.info("image retention: deleted %d images older than %d days", pruned, days)
        self.models.start()
        retire = asyncio.create_task(self._housekeeping(), name="housekeeping")
        for cam in self.cameras.values():
            cam.start(self._frame_from_camera)
        self.plc.start(self._loop)
        self.core.models_ready()  # the first generation's worker runs: the core may start
        try:
            await stop.wait()
        finally:
            retire.cancel()
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self.core.state not in (State.STOPPED, State.ABORTED, State.STOPPING):
            self.command(Command.STOP, source="shutdown")
        deadline = time.monotonic() + self.drain_timeout_s
        while self.core.any_undecided() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # Verdicts written but not yet echoed: wait a few PLC cycles for the acknowledgements, so
        # the records say what the PLC accepted (a PASS without an accepted echo is kicked).
        deadline = min(deadline, time.monotonic() + max(0.5, 5 * self.cell.plc.ack_timeout_ms / 1000.0))
        while time.monotonic() < deadline and self.core.awaiting_acks():
            await asyncio.sleep(0.01)
        for cam in self.cameras.values():
            cam.stop()
        # The last NO_DECISION verdicts still go to the PLC, and their records say when.
        self.actions.carry_out(self.core.decide_all(time.monotonic()))
        await asyncio.to_thread(self._drain_verdicts)
        await asyncio.sleep(0.01)  # the I/O thread's verdict_written callbacks run first
        self.actions.carry_out(self.core.finish_all())
        self.plc.stop()
        await asyncio.to_thread(self.plc.join, 5.0)
        await self.models.stop_all()
        stopped = not any(stack.worker.alive for stack in self.stacks.values())
        if left := self.images.release_all(workers_stopped=stopped):
            log.warning("%d frames left unreleased: their inference worker did not stop in time", left)
        await asyncio.to_thread(self.events.close)  # after the last records: subscribers get them
        await asyncio.to_thread(self.store.close)
        self.link.close()

    def _drain_verdicts(self) -> None:
        deadline = time.monotonic() + 2.0
        while not self.plc.drained() and time.monotonic() < deadline:
            time.sleep(0.005)
