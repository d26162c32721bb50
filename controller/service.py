"""The cell service: wires the core to the PLC link, cameras, inference and the record store.

Threads and their roles (all named):
- the asyncio loop owns the `CellCore`; every event reaches it through `call_soon_threadsafe`;
- `plc-io` reads the whole input area once per cycle, writes the header and queued verdicts,
  each batch of them made durable in the verdict journal first (one fdatasync);
- each camera driver's own thread delivers frames; `infer-N-prep` preprocesses views and
  `infer-N` runs batches (N: the recipe generation); `records` writes.
Nothing here blocks the loop; every queue between threads is bounded.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from controller.config import CellConfig, Recipe, content_hash
from controller.contract import (
    AckStatus,
    AlarmCode,
    RecipeResult,
    Verdict,
    area_layout,
    cell_header_bytes,
)
from controller.core.cell import (
    Action,
    Alarm,
    CellCore,
    CellPlan,
    DropFrame,
    Infer,
    RecipeRequest,
    RecordPart,
    WriteVerdict,
    percentile,
)
from controller.core.fusion import FusionRule
from controller.core.packml import Command, State
from controller.core.types import PartTrack, ViewResult, ViewStatus
from controller.inference.adapters import make_adapter
from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import GpuOptions, ModelLoadError, OnnxRunner
from controller.inference.validation import validation_batch
from controller.inference.worker import InferenceWorker, Outcome
from controller.interfaces import Camera, CameraError, Frame, PlcLink
from controller.recipes import RecipeIndex, RecipeLookupError, check_recipe
from controller.records import PartRecord, RecordStore

log = logging.getLogger(__name__)

#: A refused recipe's reason carries at most this many problems, one a line (API: a JSON list).
MAX_REFUSAL_PROBLEMS = 50


@dataclass
class Stack:
    """Everything one recipe generation needs: its plan, model session and inference worker."""

    recipe: Recipe
    recipe_hash: str
    plan: CellPlan
    runner: OnnxRunner
    worker: InferenceWorker


def build_plan(cell: CellConfig, recipe: Recipe) -> CellPlan:
    """Cell geometry in encoder counts for the recipe's cameras."""
    cpm = cell.encoder.counts_per_mm

    def counts(mm: float) -> int:
        return round(mm * cpm)

    st = cell.stations
    f = recipe.fusion
    return CellPlan(
        cameras=tuple(recipe.cameras),
        camera_offsets={n: counts(trigger_mm(cell, recipe, n)) for n in recipe.cameras},
        decision_offset=counts(recipe.reject.decision_mm or st.decision_mm),
        deadline_offset=counts(st.deadline_mm),
        reject_offset=counts(st.reject_mm),
        confirm_offset=counts(st.confirm_mm),
        match_tolerance=counts(cell.match_tolerance_mm),
        max_counts_per_s=cell.max_belt_speed_mm_s * cpm,
        trigger_cameras=tuple(c.name for c in cell.cameras) if cell.plc.trigger_ring else (),
        counts_per_mm=cpm,
        min_part_pitch=max(1, counts(cell.min_part_pitch_mm)),
        ack_timeout_s=cell.plc.ack_timeout_ms / 1000.0,
        plc_heartbeat_timeout_s=cell.plc.heartbeat_timeout_s,
        fusion=FusionRule(f.rule, f.k, f.weights, f.threshold),
        hold_on_unconfirmed_kick=recipe.reject.stop_on_confirm_failure,
    )


def trigger_mm(cell: CellConfig, recipe: Recipe, camera: str) -> float:
    """Where `camera` fires for this product: its station plus the recipe's offset (mm)."""
    return cell.camera(camera).station_mm + recipe.cameras[camera].trigger_offset_mm


@dataclass(frozen=True)
class StatusSnapshot:
    """An immutable view of the cell for the console and the API."""

    state: str
    recipe: str
    recipe_hash: str
    provider: str
    parts: int
    passed: int
    failed: int
    no_decision: int
    in_flight: int
    parts_per_min: float
    latency_p50_ms: float
    latency_p99_ms: float
    rejects_by_reason: dict[str, int]
    cameras: dict[str, dict[str, int]]
    link_up: bool
    heartbeat_age_s: float
    alarms: dict[int, str]
    recent: list[tuple[int, str, str]]
    counters: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    line_speed_mm_s: float = 0.0
    rejects_by_camera: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage: (p50, p99)
    camera_fps: dict[str, float] = field(default_factory=dict)


def snapshot_from_dict(d: dict[str, Any]) -> StatusSnapshot:
    """A snapshot as the API sends it (JSON) back into a `StatusSnapshot`."""
    known = {f for f in StatusSnapshot.__dataclass_fields__}
    v = {k: val for k, val in d.items() if k in known}
    v["alarms"] = {int(k): str(t) for k, t in d.get("alarms", {}).items()}
    v["recent"] = [tuple(r) for r in d.get("recent", [])]
    v["stage_ms"] = {k: (float(a), float(b)) for k, (a, b) in d.get("stage_ms", {}).items()}
    if v.get("heartbeat_age_s") is None:
        v["heartbeat_age_s"] = float("inf")
    return StatusSnapshot(**v)


#: Stages of one part's way, for the console: what each latency measures.
STAGES = {
    "frame": "trigger to frame received",
    "queue": "frame to inference start",
    "infer": "inference of the batch",
    "decide": "last view to verdict",
    "write": "verdict to PLC write",
    "journal": "verdict journal sync",
    "total": "trigger to verdict written",
}


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
        self._recipes = RecipeIndex(recipe_dir)  # recipes by name and number, parsed once per change
        self._recipe_requests: set[asyncio.Task[None]] = set()  # PLC recipe requests in progress
        self.drain_timeout_s = drain_timeout_s
        self._data_root = data_dir or Path(".")
        missing = [c for c in recipe.cameras if c not in cameras]
        if missing:
            raise ValueError(f"recipe {recipe.name} needs cameras {missing} that the cell does not provide")
        self.cameras = dict(cameras)
        self.layout = area_layout(cell.plc.ring_size)
        self._generation = 0
        self.active = self._build_stack(recipe, recipe_dir)
        self.stacks: dict[int, Stack] = {0: self.active}
        self.core = CellCore(self.active.plan, self.layout)
        self._changing = False
        root = self._data_root
        database = root / cell.records.database
        journal = database.parent / "journal"
        self.store = RecordStore(database, root / cell.records.images, run_id, journal=journal)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Verdicts for plc-io: the verdict, its part (for the journal) and whether its images are kept.
        self._verdicts: queue.Queue[tuple[WriteVerdict, PartTrack | None, bool]] = queue.Queue(
            maxsize=4 * self.layout.ring_size
        )
        self._unwritten: deque[WriteVerdict] = deque()  # plc-io's: journaled, not yet written
        self._journaled: OrderedDict[tuple[int, int], None] = OrderedDict()  # plc-io's: (epoch, part)
        self._journal_failing: str | None = None
        self._header = cell_header_bytes(state=int(State.STOPPED), active_recipe=recipe.number)
        self._heartbeat = 0
        self._io_stop = threading.Event()
        self._io_thread = threading.Thread(target=self._io_main, name="plc-io", daemon=True)
        self.link_up = False
        self._last_inputs = 0.0
        self._progress = 0  # PLC cycles handled without error, and reconnect attempts
        self._image_errors_seen = 0
        self._loop_errors = 0
        self._frames: dict[int, dict[str, Frame]] = {}
        self._images: dict[int, dict[str, np.ndarray]] = {}
        self._passed_seen = 0
        self._finished: deque[float] = deque(maxlen=2000)
        self.recent: deque[tuple[int, str, str]] = deque(maxlen=12)
        # "total" is the core's own trigger-to-verdict record (`CellCore.latencies`).
        self._stages: dict[str, deque[float]] = {k: deque(maxlen=2048) for k in STAGES if k != "total"}
        self._rejects_by_camera: dict[str, int] = dict.fromkeys(self.cameras, 0)
        self._rates: dict[str, float] = {}
        self._rate_base: tuple[float, int, dict[str, int]] | None = None

    @property
    def recipe(self) -> Recipe:
        return self.active.recipe

    @property
    def recipe_hash(self) -> str:
        return self.active.recipe_hash

    @property
    def runner(self) -> OnnxRunner:
        return self.active.runner

    def _build_stack(self, recipe: Recipe, recipe_dir: Path) -> Stack:
        """Load and warm a recipe's model (blocking: seconds). Raises ModelLoadError."""
        cell = self.cell
        inf = cell.inference
        gpu = GpuOptions(inf.device_id, inf.fp16, self._data_root / inf.trt_cache, inf.max_batch)
        spec = PreprocessSpec(
            (cell.cameras[0].height, cell.cameras[0].width),
            recipe.model.input_size,
            recipe.roi,
            recipe.model.mean,
            recipe.model.std,
        )
        validation = None
        if inf.fp16 and recipe.model.validation_images:  # an FP16 model is checked on these
            try:
                validation = validation_batch(recipe_dir / recipe.model.validation_images, Preprocessor(spec))
            except (ValueError, OSError) as exc:
                raise ModelLoadError(f"recipe {recipe.name}: {exc}") from None
        runner = OnnxRunner(
            (recipe_dir / recipe.model.path).resolve(), tuple(inf.providers), inf.threads or None, gpu,
            fp16_tolerance=recipe.model.fp16_tolerance, validation=validation,
        )  # fmt: skip
        adapter = make_adapter(recipe, runner.info.output_names)
        gen = self._generation
        self._generation += 1
        worker = InferenceWorker(
            runner, Preprocessor(spec), adapter, self._results_from_worker,
            cell.inference.max_batch, cell.inference.queue_size, name=f"infer-{gen}",
        )  # fmt: skip
        rhash = content_hash(recipe)
        plan = replace(
            build_plan(cell, recipe),
            recipe_name=recipe.name, recipe_number=recipe.number, recipe_hash=rhash,
            model_hash=runner.info.sha256, generation=gen,
        )  # fmt: skip
        return Stack(recipe, rhash, plan, runner, worker)

    # -------------------------------------------------------------- changeover
    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        """Validate, load and warm a recipe, then switch to it; the active one stays on any failure.
        `name` is a name, number (digits) or file name in the recipe folder. The reason of a
        refusal holds one problem a line."""
        wanted = name if name is not None else f"number {number}"
        old = self.active
        result, reason, to_hash, new = RecipeResult.NONE, "", "", None
        if self._changing:
            result, reason = RecipeResult.BUSY, "another changeover is in progress"
        elif (why := self.core.recipe_refusal()) is not None:
            result, reason = RecipeResult.NOT_SAFE, why
        elif isinstance(path := await asyncio.to_thread(self._lookup, name, number), RecipeLookupError):
            # none (with a did-you-mean and the recipes there are), or two files with its name or number
            result = RecipeResult.UNKNOWN_NUMBER if path.unknown else RecipeResult.INVALID
            reason = str(path)
        elif self._changing:  # another one started while this one looked its file up
            result, reason = RecipeResult.BUSY, "another changeover is in progress"
        else:
            self._changing = True
            try:
                checked = await asyncio.to_thread(check_recipe, path, self.cell, False)
                missing = [
                    c for c in (checked.recipe.cameras if checked.recipe else ()) if c not in self.cameras
                ]
                if checked.problems or checked.recipe is None:  # one problem a line, every one
                    result = RecipeResult.INVALID
                    reason = "\n".join(str(p) for p in checked.problems[:MAX_REFUSAL_PROBLEMS])
                elif missing:
                    result, reason = RecipeResult.INVALID, f"cameras {missing} are not running in this cell"
                else:
                    try:
                        new = await asyncio.to_thread(self._build_stack, checked.recipe, path.parent)
                    except Exception as exc:  # onnxruntime's errors are untyped
                        result, reason = RecipeResult.MODEL_FAILED, str(exc)[:300]
                    else:
                        to_hash = new.recipe_hash
                        if (why := self.core.recipe_refusal()) is not None:  # state changed while loading
                            result, reason = RecipeResult.NOT_SAFE, why
                        else:
                            new.worker.start()
                            self.stacks[new.plan.generation] = new
                            self.active = new
                            boundary = self.core.activate(new.plan)
                            result = RecipeResult.ACTIVE
                            reason = f"judges parts from {boundary} on, model on {new.runner.info.provider}"
                            await asyncio.to_thread(self._apply_camera_settings, new.recipe)
            except Exception as exc:  # whatever a file holds: an audited refusal, never a lost reply
                log.error("recipe %s from %s: %s: %s", wanted, source, type(exc).__name__, exc)
                if result is not RecipeResult.ACTIVE:
                    result, reason = RecipeResult.INVALID, f"{type(exc).__name__}: {exc}"[:300]
            finally:
                self._changing = False
        self.store.put_audit(
            source, old.recipe.name, old.recipe_hash, new.recipe.name if new else wanted, to_hash,
            result.name, reason,
        )  # fmt: skip
        level = logging.INFO if result is RecipeResult.ACTIVE else logging.WARNING
        head, *more = reason.splitlines() or [""]
        log.log(level, "recipe %s from %s: %s %s", wanted, source, result.name, head)
        for line in more:
            log.log(level, "recipe %s from %s:   %s", wanted, source, line)
        return result, reason

    def _lookup(self, name: str | None, number: int | None) -> Path | RecipeLookupError:
        """The one recipe file asked for, or why there is none (blocking: a worker thread)."""
        try:
            return self._recipes.resolve(name, number)
        except RecipeLookupError as exc:
            return exc

    def _apply_camera_settings(self, recipe: Recipe) -> None:
        """Exposure and gain of the recipe, on cameras that take them (Basler; not the simulated ones)."""
        for name, settings in recipe.cameras.items():
            set_exposure = getattr(self.cameras[name], "set_exposure", None)
            if set_exposure is None:
                continue
            try:
                set_exposure(settings.exposure_us, settings.gain_db)
            except CameraError as exc:  # the camera keeps its last values
                log.error("camera %s: recipe %s exposure/gain not applied: %s", name, recipe.name, exc)

    async def _plc_recipe_request(self, seq: int, number: int) -> None:
        result = RecipeResult.INVALID
        try:
            result, _ = await self.activate_recipe("plc", number=number)
        except Exception as exc:  # the PLC gets an answer whatever happened
            log.error("PLC recipe request %d (recipe %d): %s: %s", seq, number, type(exc).__name__, exc)
        finally:
            self.core.answer_recipe(seq, result)

    async def _housekeeping(self) -> None:
        """Twice a second: alarm for cameras that are gone; retire recipes no part depends on."""
        while True:
            await asyncio.sleep(0.5)
            gone = [n for n, cam in self.cameras.items() if not cam.stats.connected]
            self._execute(self.core.cameras_absent(gone))
            self._measure_rates()
            busy = {t.plan.generation for t in self.core.undecided.values() if t.plan is not None}
            for gen, stack in list(self.stacks.items()):
                if stack is not self.active and gen not in busy:
                    del self.stacks[gen]
                    await asyncio.to_thread(stack.worker.stop)
                    log.info("recipe %s (generation %d) retired", stack.recipe.name, gen)

    def _measure_rates(self) -> None:
        """Belt speed and camera frame rates over the last housekeeping period."""
        now, pos = time.monotonic(), self.core.position
        frames = {n: cam.stats.frames for n, cam in self.cameras.items()}
        if self._rate_base is not None:
            t0, p0, f0 = self._rate_base
            dt = now - t0
            if dt > 0:
                self._rates["belt"] = (pos - p0) / dt / self.cell.encoder.counts_per_mm
                for n, f in frames.items():
                    self._rates[n] = (f - f0.get(n, f)) / dt
        self._rate_base = (now, pos, frames)

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
        return self._io_thread.is_alive() and self.active.worker.alive

    @property
    def progress(self) -> int:
        """Grows with every PLC cycle handled without error (and every reconnect attempt while
        the link is down): the watchdog is petted only while it grows."""
        return self._progress

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
        pruned = await asyncio.to_thread(self.store.prune_images, self.recipe.images.retention_days)
        if pruned:
            log.info(
                "image retention: deleted %d images older than %d days",
                pruned,
                self.recipe.images.retention_days,
            )
        self.active.worker.start()
        retire = asyncio.create_task(self._housekeeping(), name="housekeeping")
        for cam in self.cameras.values():
            cam.start(self._frame_from_camera)
        self._io_thread.start()
        self.core.inference_ready = True
        try:
            await stop.wait()
        finally:
            retire.cancel()
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self.core.state not in (State.STOPPED, State.ABORTED, State.STOPPING):
            self.core.command(Command.STOP)
        deadline = time.monotonic() + self.drain_timeout_s
        while self.core.undecided and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # Verdicts written but not yet echoed: wait a few PLC cycles for the acknowledgements, so
        # the records say what the PLC accepted (a PASS without an accepted echo is kicked).
        deadline = min(deadline, time.monotonic() + max(0.5, 5 * self.cell.plc.ack_timeout_ms / 1000.0))
        while time.monotonic() < deadline and any(
            t.attempts and t.ack is AckStatus.NONE and t.kicked is None for t in self.core.parts.values()
        ):
            await asyncio.sleep(0.01)
        for cam in self.cameras.values():
            cam.stop()
        # The last NO_DECISION verdicts still go to the PLC, and their records say when.
        self._execute(self.core.decide_all(time.monotonic()))
        await asyncio.to_thread(self._drain_verdicts)
        await asyncio.sleep(0.01)  # the I/O thread's verdict_written callbacks run first
        self._execute(self.core.finish_all())
        self._io_stop.set()
        await asyncio.to_thread(self._io_thread.join, 5.0)
        for stack in self.stacks.values():
            await asyncio.to_thread(stack.worker.stop)
        for frames in self._frames.values():
            for fr in frames.values():
                fr.release()
        await asyncio.to_thread(self.store.close)
        self.link.close()

    def _drain_verdicts(self) -> None:
        deadline = time.monotonic() + 2.0
        while (not self._verdicts.empty() or self._unwritten) and time.monotonic() < deadline:
            time.sleep(0.005)

    # --------------------------------------------------------------- plc-io
    def _io_main(self) -> None:
        try:
            self._io_loop()
        finally:
            if self.store.journal is not None:
                self.store.journal.close()

    def _io_loop(self) -> None:
        cycle = self.cell.plc.cycle_ms / 1000.0
        backoff = 0.1
        next_read = time.monotonic()
        loop = self._loop
        assert loop is not None
        while not self._io_stop.is_set():
            if not self.link_up:
                try:
                    self.link.connect()
                except Exception as exc:
                    loop.call_soon_threadsafe(self._reconnecting)
                    if backoff == 0.1:
                        log.error("PLC link down: %s", exc)  # once, then quietly until it recovers
                    self._io_stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                log.info("PLC link up: %r", self.link)
                self.link_up, backoff = True, 0.1
            try:
                now = time.monotonic()
                if now >= next_read:
                    t0 = time.monotonic()
                    snap = self.link.read_inputs()
                    t1 = time.monotonic()
                    # The trigger ring is its own area: a second request, after the parts.
                    trig = self.link.read_triggers() if self.cell.plc.trigger_ring else None
                    loop.call_soon_threadsafe(self._on_inputs, snap, (t0 + t1) / 2, t1 - t0, trig)
                    self.link.write_header(self._header)
                    next_read = max(next_read + cycle, now)
                if self._unwritten:  # one write per turn: the next read is never late for a batch
                    w = self._unwritten.popleft()
                    self.link.write_verdict(w.part_id, w.verdict, int(w.reason), w.attempt, w.sensor_count)
                    loop.call_soon_threadsafe(self.core.verdict_written, w.part_id, time.monotonic())
                    continue
                try:
                    first = self._verdicts.get(timeout=max(0.0, next_read - time.monotonic()))
                except queue.Empty:
                    continue
                self._unwritten.extend(self._journal_batch(first))
            except Exception as exc:
                log.error("PLC link lost: %s", exc)
                self.link.close()
                self.link_up = False
                loop.call_soon_threadsafe(self._on_link_lost, str(exc))

    def _journal_batch(self, first: tuple[WriteVerdict, PartTrack | None, bool]) -> list[WriteVerdict]:
        """plc-io: take every queued verdict, journal those of parts not journaled yet with one
        sync, and return the verdicts to write. While the journal cannot be written, PASS
        verdicts that are not in it are withheld: the PLC rejects those parts (no verdict)."""
        batch = [first]
        while len(batch) < self._verdicts.maxsize:
            try:
                batch.append(self._verdicts.get_nowait())
            except queue.Empty:
                break
        journal = self.store.journal
        new: list[tuple[int, int]] = []
        entries = []
        for w, track, kept in batch:
            if track is not None and (key := (track.epoch, w.part_id)) not in self._journaled:
                new.append(key)
                entries.append(self.store.journal_entry(track, kept))
        if not entries or journal is None:
            return [w for w, _, _ in batch]
        t0 = time.monotonic()
        try:
            journal.append(entries)
        except OSError as exc:
            if self._journal_failing is None:
                log.error("verdict journal cannot be written: %s (PASS verdicts withheld)", exc)
            self._journal_failing = f"verdict journal cannot be written: {exc}"
            if exc.errno == errno.ENOSPC:
                self.store.make_room()
            failed = set(new)
            return [
                w
                for w, track, _ in batch
                if w.verdict is not Verdict.PASS or track is None or (track.epoch, w.part_id) not in failed
            ]
        took = time.monotonic() - t0
        if self._journal_failing is not None:
            log.info("verdict journal: writing again")
            self._journal_failing = None
        for key in new:
            self._journaled[key] = None
        while len(self._journaled) > 4096:  # far more parts than are ever in flight
            self._journaled.popitem(last=False)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stages["journal"].append, took)
        return [w for w, _, _ in batch]

    def _on_link_lost(self, why: str) -> None:
        self._execute(self.core.link_lost(why))

    def _watch_store(self, now: float) -> None:
        """Records that cannot be written stop the cell passing parts; lost images are alarmed."""
        st = self.store
        failing = st.failing or self._journal_failing
        if failing is not None and AlarmCode.RECORDS_FAILING not in self.core.alarms:
            self._execute(self.core.fault(AlarmCode.RECORDS_FAILING, failing[:200], now))
        if st.image_errors != self._image_errors_seen:
            self._image_errors_seen = st.image_errors
            why = ("disk full: " if st.disk_full else "") + st.last_image_error
            self._execute(self.core.raise_alarm(AlarmCode.IMAGES_NOT_SAVED, f"images not saved: {why}"[:200]))

    def _reconnecting(self) -> None:
        self._progress += 1

    def _on_inputs(self, snap: np.void, t: float, round_trip: float, triggers: np.void | None = None) -> None:
        self._last_inputs = t
        try:
            actions = self.core.on_plc_inputs(snap, t, round_trip, triggers)
        except Exception as exc:  # a bug: it must stop the line visibly, never freeze it silently
            self._loop_errors += 1
            if self._loop_errors == 1 or self._loop_errors % 1000 == 0:
                log.exception("control loop error #%d handling PLC data", self._loop_errors)
            text = f"control loop error handling PLC data: {type(exc).__name__}: {exc}"[:200]
            actions = self.core.fault(AlarmCode.CONTROL_LOOP_ERROR, text, t)
        else:
            self._progress += 1
        self._execute(actions)
        self._watch_store(t)
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        self._header = cell_header_bytes(heartbeat=self._heartbeat, **self.core.header_fields())

    # ------------------------------------------------------- frames, results
    def _frame_from_camera(self, frame: Frame) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            frame.release()
            return
        loop.call_soon_threadsafe(self._on_frame, frame)

    def _on_frame(self, frame: Frame) -> None:
        act = self.core.on_frame(frame.camera, frame.t_trigger, frame.counter, frame, time.monotonic())
        if act is not None:  # None: it waits in the core for its trigger record
            self._execute([act])

    def _infer(self, act: Infer) -> None:
        track = self.core.undecided[act.part_id]
        stack = self.stacks.get(track.plan.generation, self.active)
        stack.worker.submit(act.part_id, act.frame)

    def _results_from_worker(self, outcomes: list[Outcome]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            for *_, frame in outcomes:
                frame.release()
            return
        loop.call_soon_threadsafe(self._on_results, outcomes)  # one wake-up per batch, not per view

    def _on_results(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self._on_result(*o)

    def _on_result(self, part_id: int, res: ViewResult, t0: float, t1: float, frame: Frame) -> None:
        if part_id in self.core.undecided:
            self._frames.setdefault(part_id, {})[frame.camera] = frame
            self._execute(self.core.on_view_result(part_id, res, t0, t1))
        else:
            self.core.on_view_result(part_id, res, t0, t1)  # counted as late
            frame.release()

    # ---------------------------------------------------------------- actions
    def _execute(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, WriteVerdict):
                if a.attempt == 1:
                    self._decided(a.part_id)
                try:
                    self._verdicts.put_nowait((a, self.core.parts.get(a.part_id), a.part_id in self._images))
                except queue.Full:
                    self.core.counts["verdict_queue_full"] += 1  # the core repeats unacked verdicts
            elif isinstance(a, RecordPart):
                t = a.part
                self.store.put_part(PartRecord(t, self._images.pop(t.part_id, {})))
                self._finished.append(time.monotonic())
                self.recent.append((t.part_id, t.verdict.name, ",".join(t.reasons)[:60]))
                self._account(t)
            elif isinstance(a, RecipeRequest):
                task = asyncio.get_running_loop().create_task(
                    self._plc_recipe_request(a.seq, a.number), name=f"recipe-request-{a.seq}"
                )
                self._recipe_requests.add(task)  # the loop keeps only a weak reference to a task
                task.add_done_callback(self._recipe_requests.discard)
            elif isinstance(a, Alarm):
                self.store.put_alarm(a.code, a.text)  # raised once per episode; cleared with a count
            elif isinstance(a, Infer):
                self._infer(a)
            elif isinstance(a, DropFrame):
                a.frame.release()

    def _account(self, t: PartTrack) -> None:
        """Stage latencies and rejects by camera of one finished part (for the console)."""
        st = self._stages
        ends = []
        for v in t.views.values():
            if v.t_trigger is not None and v.t_frame is not None:
                st["frame"].append(v.t_frame - v.t_trigger)
            if v.t_frame is not None and v.t_infer_start is not None:
                st["queue"].append(v.t_infer_start - v.t_frame)
            if v.t_infer_start is not None and v.t_infer_end is not None:
                st["infer"].append(v.t_infer_end - v.t_infer_start)
                ends.append(v.t_infer_end)
        if t.verdict is not Verdict.PASS and t.inspected and t.plan is not None:
            for cam in t.plan.cameras:  # the views that made it a reject: failed, missing or broken
                r = t.views[cam].result if cam in t.views else None
                if r is None or r.status is not ViewStatus.OK or r.defects:
                    self._rejects_by_camera[cam] = self._rejects_by_camera.get(cam, 0) + 1
        if ends and t.t_fused is not None:
            st["decide"].append(t.t_fused - max(ends))
        if t.t_fused is not None and t.t_first_write is not None:
            st["write"].append(t.t_first_write - t.t_fused)

    def _decided(self, part_id: int) -> None:
        frames = self._frames.pop(part_id, {})
        track = self.core.parts.get(part_id)
        keep = False
        if track is not None:
            stack = self.stacks.get(track.plan.generation, self.active)
            pol = stack.recipe.images
            if track.verdict.name != "PASS":
                keep = pol.save_rejected
            else:
                self._passed_seen += 1
                keep = pol.sample_passed_every > 0 and self._passed_seen % pol.sample_passed_every == 0
        if keep:
            self._images[part_id] = {cam: fr.image.copy() for cam, fr in frames.items()}
        for fr in frames.values():
            fr.release()

    # ----------------------------------------------------------------- status
    def snapshot(self) -> StatusSnapshot:
        c = self.core
        now = time.monotonic()
        recent = [t for t in self._finished if now - t < 10.0]
        ppm = len(recent) * 6.0 if recent else 0.0
        by_reason = {k.split(":", 1)[1]: v for k, v in c.counts.items() if k.startswith("no_decision:")}
        by_reason["defect"] = c.counts["verdict:fail"]
        cams = {
            n: {
                "frames": cam.stats.frames,
                "missed": cam.stats.skipped + c.counts[f"missing_frame:{n}"],
                "skipped": cam.stats.skipped,
                "underruns": cam.stats.underruns,
                "connected": int(cam.stats.connected),
            }
            for n, cam in self.cameras.items()
        }
        lat = list(c.latencies)
        return StatusSnapshot(
            state=c.state.name,
            recipe=self.recipe.name,
            recipe_hash=self.recipe_hash[:12],
            provider=self.runner.info.provider,
            parts=c.counts["parts"],
            passed=c.counts["verdict:pass"],
            failed=c.counts["verdict:fail"],
            no_decision=c.counts["verdict:no_decision"],
            in_flight=c.in_flight(),
            parts_per_min=ppm,
            latency_p50_ms=percentile(lat, 50) * 1e3,
            latency_p99_ms=percentile(lat, 99) * 1e3,
            rejects_by_reason={k: v for k, v in by_reason.items() if v},
            cameras=cams,
            link_up=self.link_up,
            heartbeat_age_s=now - self._last_inputs if self._last_inputs else float("inf"),
            alarms=dict(c.alarms),
            recent=list(self.recent),
            counters=dict(c.counts),
            ready=self.ready,
            line_speed_mm_s=self._rates.get("belt", 0.0),
            rejects_by_camera={k: v for k, v in self._rejects_by_camera.items() if v},
            stage_ms={
                k: (percentile(d, 50) * 1e3, percentile(d, 99) * 1e3)
                for k, d in (*self._stages.items(), ("total", lat))
                if d
            },
            camera_fps={n: self._rates.get(n, 0.0) for n in self.cameras},
        )

    def command(self, cmd: Command) -> str | None:
        """Apply a local command (CLI, console). Must be called on the loop."""
        return self.core.command(cmd)

    def call(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)
