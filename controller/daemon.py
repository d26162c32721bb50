"""`cellctl run`: the cell as a headless service, under systemd or by hand.

It tells systemd READY=1 only once the PLC link, every camera and the model are up, pets the
watchdog from the control loop itself (a stalled loop or a dead I/O or inference thread stops
the pets, and systemd restarts the service), and publishes a one-line STATUS. SIGTERM,
SIGINT or SIGHUP stop it: the cell takes no new parts, finishes the parts in flight or rejects them
fail-safe after the drain timeout, flushes the records and exits 0.

The plant connections the cell config enables (MQTT, OPC UA) start once the service is built and
subscribe to its event outlet; at a stop they get the last events, then close each with its own
time budget (MQTT sends what is queued and marks the cell offline, "stopped").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from controller.api import ControlApi, prepare_socket_folder, socket_alive
from controller.assembly import build_cell, new_run_id, start_plant
from controller.config import CellConfig, ConfigError, load_cell_config
from controller.contract import Verdict
from controller.core.counters import Count
from controller.inference.runner import ModelLoadError
from controller.interfaces import CameraError
from controller.plant.links import PlantLinks, PlantStartError
from controller.recipes import RecipeLookupError, check_recipe, folder_duplicates, recipe_file
from controller.service import CellService
from controller.systemd import Notifier, watchdog_interval

log = logging.getLogger(__name__)

#: Signals that stop the cell cleanly. SIGHUP too: a hang-up (the terminal of a `cellctl run`
#: started by hand closes) would otherwise kill it where it stands, without draining.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class RunOptions:
    cell: Path
    recipe: str
    recipes: Path | None
    data_dir: Path
    socket: Path
    drain_timeout_s: float = 10.0


class StartupError(Exception):
    """The service cannot start; the message says what to fix, `details` (logged one a line)
    every problem behind it."""

    def __init__(self, message: str, details: list[str] | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.details = details or []
        self.code = code  # the exit code: 2 for a usage error (no such recipe), else 1


def recipe_path(name: str, folder: Path) -> Path:
    """A recipe given as a file, or by name, number or file name in `folder`; refused when the
    folder holds two recipes with one name or number (a PLC request could take either)."""
    try:
        path = recipe_file(name, folder)
    except RecipeLookupError as exc:  # no such recipe is a usage error, as with the other commands
        raise StartupError(str(exc), code=2 if exc.unknown else 1) from None
    for where in dict.fromkeys((folder, path.parent)):
        dups = folder_duplicates(where) if where.is_dir() else []
        if dups:
            raise StartupError(
                f"recipe folder {where}: {'; '.join(dups)} (give each its own name and number)"
            )
    return path


def status_line(service: CellService) -> str:
    s = service.snapshot()
    rejected = s.failed + s.no_decision
    link = "PLC up" if s.link_up else "PLC DOWN"
    alarms = f", alarms {','.join(str(a) for a in sorted(s.alarms))}" if s.alarms else ""
    return (
        f"{s.state} {s.recipe} {s.parts_per_min:.0f}/min, {s.passed} passed, {rejected} rejected, "
        f"{link}{alarms}"
    )


def claim_socket_folder(socket_path: Path) -> bool:
    """Check the control socket's folder before anything loads: refused when its parent does
    not exist (a typo), when others could write it, or when another service answers on the
    socket. True when this call made the folder (the service removes it again at exit)."""
    folder = socket_path.parent
    if not folder.parent.is_dir():
        raise StartupError(
            f"control socket {socket_path}: the folder above it, {folder.parent}, does not exist "
            "(set --socket or CELLCTL_SOCKET to a path in an existing folder)"
        )
    made = not folder.exists()
    prepare_socket_folder(socket_path)  # a folder others could write is refused before anything opens
    if socket_path.exists() and socket_alive(socket_path):
        raise StartupError(f"another cell service answers on {socket_path}")
    return made


async def serve(opts: RunOptions, cell: CellConfig) -> int:
    recipe_dir = opts.recipes or opts.cell.resolve().parent.parent
    path = recipe_path(opts.recipe, recipe_dir)
    made = claim_socket_folder(opts.socket)
    try:
        return await _serve(opts, cell, path)
    finally:
        if made:  # the folder this start made, once the socket in it is gone
            with contextlib.suppress(OSError):
                opts.socket.parent.rmdir()


async def _serve(opts: RunOptions, cell: CellConfig, path: Path) -> int:
    checked = await asyncio.to_thread(check_recipe, path, cell, False)
    if checked.recipe is None:
        n = len(checked.problems)
        raise StartupError(
            f"recipe {path} is invalid ({n} problem{'s' if n != 1 else ''}):",
            [str(p) for p in checked.problems],
        )
    recipe = checked.recipe
    notifier = Notifier.from_env()
    notifier.notify(STATUS=f"opening cameras and loading {recipe.name}")
    run_id = new_run_id()
    service = await asyncio.to_thread(
        build_cell, cell, recipe, path.parent, opts.data_dir, run_id=run_id,
        drain_timeout_s=opts.drain_timeout_s,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        plant = await asyncio.to_thread(start_plant, service, opts.data_dir, loop, api_socket=opts.socket)
    except PlantStartError as exc:
        for cam in service.cameras.values():  # the service never ran: what build_cell opened
            cam.stop()
        service.link.close()
        raise StartupError(f"plant connection: {exc}") from None
    follow = asyncio.create_task(plant.follow(service.snapshot), name="plant-status")
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    api = ControlApi(service, opts.socket)
    await api.start()
    task = asyncio.create_task(service.run(stop), name="cell-service")
    log.info("cell %s, recipe %s (%s), run %s, API on %s", cell.name, recipe.name, path, run_id, opts.socket)
    try:
        await _supervise(service, notifier, stop, task)
    finally:
        notifier.notify(STOPPING=1, STATUS=f"stopping: draining {service.in_flight()} parts")
        log.info("stopping: draining parts in flight (at most %.1f s)", opts.drain_timeout_s)
        stop.set()
        await task
        follow.cancel()
        await close_plant(plant)
        await api.stop()
        notifier.close()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    c = service.counters
    log.info(
        "stopped: %d parts, %d passed, %d failed, %d no decision",
        c[Count.PARTS], c.verdicts[Verdict.PASS], c.verdicts[Verdict.FAIL], c.verdicts[Verdict.NO_DECISION],
    )  # fmt: skip
    return 0


async def close_plant(plant: PlantLinks) -> None:
    """Close the plant connections after the service stopped (its outlet delivered the last
    events to them), each within its own budget, and log what they sent."""
    if not plant.enabled:
        return
    await asyncio.to_thread(plant.close)
    for name, f in plant.figures().items():
        log.info("plant %s: %d sent, %d queued, %d dropped", name, f["sent"], f["queued"], f["dropped"])


async def _supervise(
    service: CellService, notifier: Notifier, stop: asyncio.Event, task: asyncio.Task[None]
) -> None:
    """READY once everything is up; STATUS each second; watchdog pets while the loop makes progress."""
    pet = watchdog_interval()
    period = min(1.0, pet) if pet else 1.0
    ready = False
    last_status = 0.0
    last_progress = -1
    while not stop.is_set():
        if task.done():
            await task  # the service failed: its exception ends the run (systemd restarts it)
            return
        now = time.monotonic()
        if not ready and service.ready:
            ready = True
            notifier.notify(READY=1, STATUS=status_line(service))
            log.info("ready: PLC link, cameras and model are up")
        # Alive is not enough: a loop that fails on every PLC cycle must be restarted too.
        if pet and service.healthy() and service.progress != last_progress:
            last_progress = service.progress
            notifier.notify(WATCHDOG=1)
        if now - last_status >= 1.0:
            last_status = now
            notifier.notify(STATUS=status_line(service))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)


def raise_file_limit(want: int = 16384) -> int:
    """Raise the soft limit on open files towards `want` (within the hard limit), as the unit's
    LimitNOFILE does under systemd; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def run_service(opts: RunOptions) -> int:
    """Run until SIGTERM/SIGINT/SIGHUP. Exit 0 after a clean stop, 1 when it cannot start."""
    log.debug("open files: at most %d", raise_file_limit())
    try:
        cell = load_cell_config(opts.cell)
        return asyncio.run(serve(opts, cell))
    except ConfigError as exc:
        for p in exc.problems:
            log.error("%s", p)
        return 1
    except (StartupError, CameraError, ModelLoadError, RuntimeError, OSError) as exc:
        log.error("cannot start: %s", exc)
        for line in getattr(exc, "details", ()):
            log.error("  %s", line)
        return exc.code if isinstance(exc, StartupError) else 1
