"""`cellctl demo`: the simulated line, the S7 PLC simulator and the controller, in one command.

The simulated PLC commands the cell through its command word (Reset, then Start) as a line
PLC would; its infeed starts once the cell inspects. At the end every disposition is scored
against ground truth and the cell's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.api import ControlApi, default_socket
from controller.assembly import build_cell, new_run_id, start_plant, with_local_plant
from controller.config import CameraSettings, CellConfig, ConfigError, Recipe, load_cell_config, load_recipe
from controller.core.packml import Command, State
from controller.daemon import close_plant
from controller.plant.links import PlantLinks, PlantStartError
from controller.plant.local_broker import free_port, port_free, start_local_broker
from controller.service import CellService, trigger_mm

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CELL = ROOT / "recipes" / "cells" / "demo-cell.yaml"
DEFAULT_RECIPE = ROOT / "recipes" / "plate-4h.yaml"
#: Emulated cameras play pre-rendered images: without --parts, this many.
EMULATED_PARTS = 300
#: OPC UA's registered port: `--opcua` without a port takes it, or a free one if it is taken.
OPCUA_PORT = 4840


@dataclass
class DemoOptions:
    parts: int = 0
    cameras: int = 3
    headless: bool = False
    json: bool = False
    parts_per_min: float | None = None
    cell: Path = DEFAULT_CELL
    recipe: Path = DEFAULT_RECIPE
    data_dir: Path | None = None
    drop_verdict_writes: float | None = None
    drop_frames: float | None = None
    extra_triggers: float | None = None
    seed: int | None = None
    socket: Path | None = None
    cameras_from: str = "sim"  # or "pylon-emulation": pylon's emulated Basler cameras
    belt_speed_mm_s: float | None = None
    trigger_ring: bool | None = None  # None: as the cell config says
    spacing_jitter: float | None = None
    plc_scan_ms: float | None = None
    plc_scan_jitter_ms: float | None = None
    #: Faults to inject, `TARGET[INDEX]:KIND[=VALUE]@SECONDS` (see `simulators.faults`).
    faults: tuple[str, ...] = ()
    verbose: int = 0  # -v given this many times: the log level of the console's control process
    mqtt: int | None = None  # a local broker's port (0: a free one); None: no MQTT
    opcua: int | None = None  # the OPC UA server's port (0: 4840 or a free one); None: no OPC UA


def plant_ports(opts: DemoOptions) -> DemoOptions:
    """`opts` with the ports `--mqtt` and `--opcua` left open (0) chosen: a free one for the
    broker; 4840 for OPC UA, or a free one if it is taken. Chosen once, before the console
    starts the control process, so both know them."""
    mqtt = free_port() if opts.mqtt == 0 else opts.mqtt
    opcua = opts.opcua
    if opcua == 0:
        opcua = OPCUA_PORT if port_free(OPCUA_PORT) else free_port()
    return replace(opts, mqtt=mqtt, opcua=opcua)


def watch_lines(mqtt: int | None, opcua: int | None) -> list[str]:
    """How a person watches the demo's plant connections: the broker's and the server's port."""
    lines = []
    if mqtt:
        lines.append(f"MQTT: mosquitto_sub -h 127.0.0.1 -p {mqtt} -v -t 'inspection/v1/#'")
    if opcua:
        lines.append(f"OPC UA: opc.tcp://127.0.0.1:{opcua}/inspection-cell/ (anonymous viewer)")
    return lines


def demo_client_id(cell: CellConfig) -> str:
    """The demo's MQTT client id: the cell's, made unique to this run (this process), so that
    two demos on one broker never take each other's session (a broker drops the older client
    of an id)."""
    return f"{cell.mqtt.resolved_client_id(cell.name)}-{os.getpid()}"


def select_cameras(cell: CellConfig, recipe: Recipe, k: int) -> tuple[CellConfig, Recipe]:
    """The cell's first `k` cameras, and the recipe's settings for each (defaults if it has none)."""
    if not 1 <= k <= len(cell.cameras):
        raise SystemExit(f"--cameras must be 1..{len(cell.cameras)} for cell {cell.name}")
    cams = cell.cameras[:k]
    settings = {c.name: recipe.cameras.get(c.name, CameraSettings()) for c in cams}
    return cell.model_copy(update={"cameras": cams}), recipe.model_copy(update={"cameras": settings})


def line_config(cell: CellConfig, recipe: Recipe, opts: DemoOptions) -> Any:
    from simulators.line import LineConfig

    sim = cell.simulation
    st = cell.stations
    return LineConfig(
        camera_offsets_mm=tuple(trigger_mm(cell, recipe, c.name) for c in cell.cameras),
        recipe_offsets_mm=_trigger_table(cell, opts.recipe.parent),
        deadline_mm=st.deadline_mm,
        reject_mm=st.reject_mm,
        confirm_mm=st.confirm_mm,
        counts_per_mm=cell.encoder.counts_per_mm,
        belt_speed_mm_s=opts.belt_speed_mm_s or sim.belt_speed_mm_s,
        scan_s=(opts.plc_scan_ms or sim.plc_scan_ms) / 1000.0,
        scan_jitter_s=(sim.plc_scan_jitter_ms if opts.plc_scan_jitter_ms is None else opts.plc_scan_jitter_ms)
        / 1000.0,
        encoder_start=sim.encoder_start,
        parts_per_min=opts.parts_per_min or sim.parts_per_min,
        spacing_jitter=sim.spacing_jitter if opts.spacing_jitter is None else opts.spacing_jitter,
        parts=opts.parts,
        seed=opts.seed if opts.seed is not None else sim.seed,
        defect_rate=sim.defect_rate,
        drop_verdict_writes=sim.drop_verdict_writes
        if opts.drop_verdict_writes is None
        else opts.drop_verdict_writes,
        drop_frames=sim.drop_frames if opts.drop_frames is None else opts.drop_frames,
        extra_triggers=sim.extra_triggers if opts.extra_triggers is None else opts.extra_triggers,
    )


def _trigger_table(cell: CellConfig, folder: Path) -> tuple[tuple[int, tuple[float, ...]], ...]:
    """The line PLC's trigger table: every valid recipe's camera triggers (mm), by number."""
    table = []
    for p in sorted(folder.glob("*.yaml")):
        try:
            r = load_recipe(p)
        except ConfigError:
            continue
        offsets = {name: cam.trigger_offset_mm for name, cam in r.cameras.items()}
        table.append((r.number, tuple(c.station_mm + offsets.get(c.name, 0.0) for c in cell.cameras)))
    return tuple(table)


Scenario = Callable[[Any, CellService], Coroutine[Any, Any, None]]

#: Signals that stop the demo as Ctrl-C does: the belt runs empty, what went through is scored,
#: and nothing is left behind (processes, control socket, temporary folder).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How the demo's console passes on its q key to the control process: a stop as Ctrl-C's, asked
#: for by a person rather than signalled, so it ends as the score says, never 128 + a signal.
KEY_STOP = signal.SIGUSR1


def stop_name(signum: int) -> str:
    """How a stop is named in messages: `q` for the console's key, else the signal's name."""
    return "q" if signum == KEY_STOP else signal.Signals(signum).name


class DemoInterrupted(Exception):
    """A stop signal came before the line ran: there is nothing to score."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {stop_name(signum)} before the line ran")
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP (and the console's q, `KEY_STOP`, where `keys`) while the demo
    runs. The first asks for a clean stop (the demo checks `signum` between its steps and in its
    main loop); a second one while the belt runs empty stops waiting for it (what was recorded
    is still scored), and one at another moment stops the demo at once (the cleanup still
    runs). Installed from the main thread only."""

    def __init__(self, keys: bool = False) -> None:
        self.signals = (*STOP_SIGNALS, KEY_STOP) if keys else STOP_SIGNALS
        self.signum: int | None = None
        self.received: list[int] = []
        self._task: asyncio.Task[Any] | None = None
        self._hurry: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python

    def _record(self, signum: int, frame: object = None) -> None:
        self.received.append(signum)
        if self.signum is None:
            self.signum = signum
        elif self._hurry is not None:
            self._hurry.cancel()
        elif self._task is not None:
            self._task.cancel()

    @property
    def by_key(self) -> bool:
        """Whether every stop came from the console's q, none from a signal."""
        return bool(self.received) and all(sig == KEY_STOP for sig in self.received)

    def exit_code(self, scored: int) -> int:
        """The demo's exit code once a second stop cut its run short: 128 + the signal, or what
        the score says (`scored`) when the stops were the console's q."""
        if self.by_key or self.signum is None:
            return scored
        return 128 + next(sig for sig in self.received if sig != KEY_STOP)

    def hurrying(self, task: asyncio.Task[Any] | None) -> None:
        """A second stop cancels `task` (the wait for the belt to run empty), not the demo."""
        self._hurry = task

    def attach(self) -> None:
        """While the calling coroutine's loop runs, the loop takes the signals (it wakes for them)."""
        if not self._previous:
            return
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        for sig in self.signals:
            self._loop.add_signal_handler(sig, self._record, sig)

    def detach(self) -> None:
        if self._loop is None:
            return
        for sig in self.signals:
            self._loop.remove_signal_handler(sig)
            signal.signal(sig, self._record)
        self._loop = self._task = self._hurry = None

    def check(self) -> None:
        """Raise DemoInterrupted if a stop signal came."""
        if self.signum is not None:
            raise DemoInterrupted(self.signum)


class NotInspecting:
    """How often and how long the cell did not inspect (held, stopped, aborted, not yet
    started again) while its line ran, from its state observed now and then. Counted from the
    first time it inspects: starting up is not a spell."""

    def __init__(self) -> None:
        self.spells = 0
        self.seconds = 0.0
        self._idle = False
        self._last: float | None = None  # None: it has not inspected yet

    def observe(self, inspecting: bool, now: float) -> None:
        if self._last is None and not inspecting:
            return
        if self._idle and self._last is not None:
            self.seconds += now - self._last
        if not inspecting and not self._idle:
            self.spells += 1
        self._idle, self._last = not inspecting, now

    def figures(self) -> dict[str, Any]:
        return {"spells": self.spells, "seconds": round(self.seconds, 3)}


def not_inspecting_rejects(
    outcomes: list[Any], records: dict[tuple[int, int], dict[str, Any]]
) -> dict[str, int]:
    """Parts kicked because the cell was not inspecting them (NO_DECISION, `not_inspecting`),
    and the false rejects left among the parts it inspected. `records` by (PLC epoch, part id)."""
    idle = {
        part
        for part, r in records.items()
        if r["verdict"] == "NO_DECISION" and r["reason"] == "not_inspecting"
    }
    kicked_idle = [o for o in outcomes if o.kicked and (o.epoch, o.part_id) in idle]
    false_idle = sum(not o.defective for o in kicked_idle)
    false_all = sum(o.kicked and not o.defective for o in outcomes)
    return {"rejected_not_inspecting": len(kicked_idle), "false_rejects_inspected": false_all - false_idle}


async def _demo(
    opts: DemoOptions, data_dir: Path, scenario: Scenario | None = None, signals: StopSignals | None = None
) -> dict[str, Any]:
    signals = signals or StopSignals()  # not installed: never stops by itself
    signals.attach()
    try:
        return await _demo_run(opts, data_dir, scenario, signals)
    finally:
        signals.detach()


async def _demo_run(
    opts: DemoOptions, data_dir: Path, scenario: Scenario | None, signals: StopSignals
) -> dict[str, Any]:
    cell, recipe = select_cameras(load_cell_config(opts.cell), load_recipe(opts.recipe), opts.cameras)
    if opts.trigger_ring is not None:
        cell = cell.model_copy(
            update={"plc": cell.plc.model_copy(update={"trigger_ring": opts.trigger_ring})}
        )
    if opts.belt_speed_mm_s and opts.belt_speed_mm_s > cell.max_belt_speed_mm_s:
        cell = cell.model_copy(update={"max_belt_speed_mm_s": opts.belt_speed_mm_s})
    emulation = None
    if opts.cameras_from == "pylon-emulation":
        from simulators.pylon_rig import ensure_emulation

        ensure_emulation(len(cell.cameras))  # before pylon loads
        opts = replace(opts, parts=opts.parts or EMULATED_PARTS, drop_frames=0.0, extra_triggers=0.0)
        emulation = data_dir / "emulated-camera-images"
    lcfg = line_config(cell, recipe, opts)
    signals.check()
    # The broker first: where none can run, the demo is refused before anything else starts.
    broker = start_local_broker(data_dir / "mqtt-broker", opts.mqtt) if opts.mqtt is not None else None
    try:
        if broker is not None or opts.opcua is not None:
            cell = with_local_plant(cell, broker.port if broker else None, opts.opcua)
        if cell.mqtt.enabled:
            cell = cell.model_copy(
                update={"mqtt": cell.mqtt.model_copy(update={"client_id": demo_client_id(cell)})}
            )
        return await _demo_line(opts, data_dir, scenario, signals, cell, recipe, lcfg, emulation)
    finally:
        if broker is not None:
            broker.stop()  # not in a thread: a second signal must not cancel the stop


async def _demo_line(
    opts: DemoOptions,
    data_dir: Path,
    scenario: Scenario | None,
    signals: StopSignals,
    cell: CellConfig,
    recipe: Recipe,
    lcfg: Any,
    emulation: Path | None,
) -> dict[str, Any]:
    from simulators.launcher import SimLine
    from simulators.scorer import load_run, score

    p = cell.plc
    sim = SimLine(lcfg, p, [c.name for c in cell.cameras], emulation)
    sim.spawn()  # here, in the main thread: the line's processes never see Ctrl-C (see SimLine.spawn)
    try:
        port = await asyncio.to_thread(sim.wait_started)
        print(f"simulated PLC: {p.protocol} on 127.0.0.1:{port} ({p.areas()})", file=sys.stderr, flush=True)
        cell = cell.model_copy(
            update={"plc": cell.plc.model_copy(update={"host": "127.0.0.1", "port": port})}
        )
        run_id = new_run_id()
        signals.check()
        service = build_cell(
            cell,
            recipe,
            opts.recipe.parent,
            data_dir,
            run_id=run_id,
            cameras={c.name: c for c in sim.cameras},
        )
        plant = await _start_plant(service, data_dir, opts.socket or default_socket())
        follow = asyncio.create_task(plant.follow(service.snapshot), name="plant-status")
        try:
            api = ControlApi(service, opts.socket or default_socket())
            await api.start()  # before the service runs: a refused socket leaves nothing running
            served = await _serve(opts, data_dir, lcfg, sim, service, api, scenario, signals)
        finally:
            follow.cancel()
            ran = plant.figures()  # closing ends the links: whether they were up is known only now
            await close_plant(plant)  # after the service stopped: the plant got its last events
    finally:
        await asyncio.to_thread(sim.stop)
    records = load_run(data_dir / cell.records.database, run_id)  # every PLC epoch's records
    result = score(served.outcomes, records, served.dropped)
    result.update(
        belt_run_empty=served.belt_run_empty,
        not_inspecting=served.not_inspecting.figures(),
        **not_inspecting_rejects(served.outcomes, records),
    )
    result.update(
        run_id=run_id,
        cameras=len(cell.cameras),
        cameras_from=opts.cameras_from,
        parts_per_min=lcfg.parts_per_min,
        provider=service.runner.info.provider,
        database=str(data_dir / cell.records.database),
        counters=service.counters.as_dict(verdicts=False),
    )
    if plant.enabled:
        result["plant"] = plant_result(ran, plant.figures())
    return result


#: Figures of a plant link that say how it was while the run went on, not after it was closed.
_AS_IT_RAN = ("connected", "clients")


def plant_result(
    ran: dict[str, dict[str, Any]], closed: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The plant figures for the run's result: the counts once the links were closed (MQTT has
    flushed what it queued) with `connected` and `clients` as they were when the run ended."""
    return {
        name: {**figures, **{k: ran[name][k] for k in _AS_IT_RAN if k in ran.get(name, {})}}
        for name, figures in closed.items()
    }


async def _start_plant(service: CellService, data_dir: Path, api_socket: Path) -> PlantLinks:
    """The plant links `with_local_plant` enabled, as `cellctl run` starts them (the OPC UA
    server commands the cell over the control socket `api_socket`); how to watch them on stderr."""
    loop = asyncio.get_running_loop()
    try:
        plant = await asyncio.to_thread(start_plant, service, data_dir, loop, api_socket=api_socket)
    except PlantStartError:
        service.link.close()  # the service never ran: the simulated line stops the cameras
        raise
    cell = service.cell
    mqtt = cell.mqtt.port if cell.mqtt.enabled else None
    opcua = urlsplit(cell.opcua.endpoint).port if cell.opcua.enabled else None
    for line in watch_lines(mqtt, opcua):
        print(line, file=sys.stderr, flush=True)
    return plant


@dataclass
class Served:
    """What the line reported: its parts' outcomes, the verdict writes it dropped, whether the
    belt was run empty (not when a second stop cut the wait short) and when the cell did not
    inspect."""

    outcomes: list[Any]
    dropped: int
    belt_run_empty: bool
    not_inspecting: NotInspecting


async def _serve(
    opts: DemoOptions,
    data_dir: Path,
    lcfg: Any,
    sim: Any,
    service: CellService,
    api: ControlApi,
    scenario: Scenario | None,
    signals: StopSignals,
) -> Served:
    """Run the cell on the line until its parts are through or a stop signal. The service and
    the API are stopped whatever happens."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop), name="cell-service")
    idle = NotInspecting()
    try:
        while not service.link_up:
            await asyncio.sleep(0.05)
            signals.check()
            if task.done():
                await task
        for cmd in (Command.RESET, Command.START):
            signals.check()
            res = await asyncio.to_thread(sim.command, int(cmd))
            if res != 1:
                raise RuntimeError(f"cell refused {cmd.name} (result {res}) in state {service.state.name}")
            await asyncio.sleep(0.05)
        run = asyncio.create_task(
            _run_line(opts, data_dir, lcfg, sim, service, scenario, signals, idle), name="demo-line"
        )
        signals.hurrying(run)  # a second stop: what was recorded is scored without waiting
        try:
            await run
            belt_run_empty = True
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not run.cancelled() or (current is not None and current.cancelling()):
                raise  # the demo itself was cancelled
            belt_run_empty = False
        finally:
            signals.hurrying(None)
        idle.observe(service.state is State.EXECUTE, time.monotonic())
        outcomes, dropped = sim.done if sim.done is not None else await asyncio.to_thread(sim.outcomes)
        return Served(outcomes, dropped, belt_run_empty, idle)
    finally:
        stop.set()
        await task
        await api.stop()


async def _run_line(
    opts: DemoOptions,
    data_dir: Path,
    lcfg: Any,
    sim: Any,
    service: CellService,
    scenario: Scenario | None,
    signals: StopSignals,
    idle: NotInspecting,
) -> None:
    """The run: until the line's parts are through or a stop signal, then the belt run empty.
    `idle` follows whether the cell inspects."""
    from simulators.faults import FaultPlan, run_plan

    budget = (lcfg.parts or 0) * lcfg.pitch_mm * 1.3 / lcfg.belt_speed_mm_s + 30.0
    t_end = time.monotonic() + (budget if lcfg.parts else 1e9)
    scripted = asyncio.create_task(scenario(sim, service), name="scenario") if scenario else None
    plan = FaultPlan.parse(opts.faults)
    faults = asyncio.create_task(
        run_plan(plan, sim, data_dir, opts.socket or default_socket()), name="fault-plan"
    )
    try:
        # A stop signal ends this loop: the belt runs empty and what went through is scored.
        while time.monotonic() < t_end and sim.done is None and signals.signum is None:
            idle.observe(service.state is State.EXECUTE, time.monotonic())
            if lcfg.parts:
                with contextlib.suppress(TimeoutError):
                    await asyncio.to_thread(sim.wait_done, 0.25)
            else:
                await asyncio.sleep(0.25)
        if scripted is not None:
            await scripted
        faults.cancel()
        if sim.done is None:
            await _run_out(sim, lcfg, lambda: idle.observe(service.state is State.EXECUTE, time.monotonic()))
    finally:
        faults.cancel()
        if scripted is not None:
            scripted.cancel()


async def _run_out(sim: Any, lcfg: Any, tick: Callable[[], None]) -> None:
    """Close the infeed and wait until every part on the belt has been reported (`tick` on
    each look)."""
    fed = await asyncio.to_thread(sim.close_infeed)
    deadline = time.monotonic() + lcfg.confirm_mm / lcfg.belt_speed_mm_s + 5.0
    while time.monotonic() < deadline:
        tick()
        _, _fed, reported = await asyncio.to_thread(sim.status)
        if reported >= fed:
            return
        await asyncio.sleep(0.05)


#: Why a demo that would run headless without --parts is refused (it would never end by itself).
HEADLESS_NEEDS_PARTS = "--headless needs --parts N (it must end by itself)"


def run_demo(opts: DemoOptions, keys: bool = False) -> int:
    """Run the demo; prints the scored JSON with --json. Exit 1 if anything was misrouted or
    lost; 128 + the signal's number when a stop signal came before the line ran, or when a
    second one stopped the demo before the belt ran empty (what was recorded is still scored).
    `keys`: run for the demo's console, whose q comes as `KEY_STOP`: a q ends the demo as the
    score says, not as a signal would.

    Unless headless, on a terminal, it runs in a child process and this one shows the console
    (`controller.demo_console`); without a terminal it runs as headless, and so needs --parts."""
    terminal = (sys.stderr if opts.json else sys.stdout).isatty()
    if not opts.headless and not terminal:
        if opts.parts == 0 and opts.cameras_from == "sim":
            print(f"cellctl demo: no terminal: it runs headless, and {HEADLESS_NEEDS_PARTS}", file=sys.stderr)
            return 2
        opts = replace(opts, headless=True)
    opts = plant_ports(opts)
    if not opts.headless:
        from rich.console import Console

        from controller.demo_console import run_with_console

        # With --json, stdout carries only the result: the console goes to stderr.
        return run_with_console(opts, Console(stderr=opts.json))
    with StopSignals(keys) as signals:
        tmp = tempfile.TemporaryDirectory(prefix="cell-demo-") if opts.data_dir is None else None
        data_dir = Path(tmp.name) if tmp is not None else opts.data_dir
        assert data_dir is not None
        try:
            result = asyncio.run(_demo(opts, data_dir, signals=signals))
        except DemoInterrupted as exc:
            print(f"cellctl demo: {exc}", file=sys.stderr)
            return signals.exit_code(0)
        except asyncio.CancelledError:  # a second signal outside the run: nothing to score
            print("cellctl demo: stopped without running the belt empty", file=sys.stderr)
            return signals.exit_code(0)
        finally:
            if tmp is not None:
                tmp.cleanup()
        if opts.json:
            if tmp is not None:  # the records went with the temporary folder
                result["database"] = None
                print(
                    "cellctl demo: the records were in a temporary folder, removed on exit "
                    "(database: null); give --data-dir DIR to keep them",
                    file=sys.stderr,
                )
            print(json.dumps(result, indent=2))
        else:
            print(summary(result))
        scored = 0 if result["misrouted"] == 0 and result["lost"] == 0 else 1
        if result["belt_run_empty"]:
            return scored
        print(
            "cellctl demo: stopped without running the belt empty: the parts still on it are not scored",
            file=sys.stderr,
        )
        return signals.exit_code(scored)


def summary(result: dict[str, Any]) -> str:
    """The demo's score in one line (without --json)."""
    line = (
        f"{result['parts']} parts: {result['passed']} passed, {result['rejected']} rejected, "
        f"{result['escapes']} escapes, {result['false_rejects']} false rejects, "
        f"{result['misrouted']} misrouted, {result['lost']} lost; "
        f"latency p50 {result['latency_ms']['p50']} ms p99 {result['latency_ms']['p99']} ms"
    )
    idle = result.get("not_inspecting") or {}
    if idle.get("spells"):
        times = "once" if idle["spells"] == 1 else f"{idle['spells']} times"
        line += (
            f"; the cell did not inspect {times}, {idle['seconds']:.1f} s in all "
            f"(held, stopped or aborted): {result['rejected_not_inspecting']} parts rejected then, "
            f"{result['false_rejects_inspected']} false rejects among the parts it inspected"
        )
    if result.get("belt_run_empty") is False:
        line += "; the belt was not run empty"
    return line
