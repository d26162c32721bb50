"""Starts the simulated line in its own processes: the PLC with its scan cycle, and the camera rig.

The simulated PLC is the one `SIM_PLCS` names for the cell config's protocol (S7 or Modbus TCP).

The PLC scan is a 1 ms loop of pure Python and the rig renders images: both would steal the
GIL from the controller, so each runs in a process of its own, as they are separate devices.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib import import_module
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from controller.config import PlcConfig, S7Config
from controller.contract import AreaLayout, area_layout
from controller.interfaces import Camera
from drivers.socket_camera import SocketCamera
from simulators.camera import camera_rig_main
from simulators.line import CameraFault, LineConfig, Outcome, PlcScan, Trigger

log = logging.getLogger(__name__)


class SimPlc(Protocol):
    """A simulated PLC server: the three areas the scan works on, served to the cell's link."""

    plc_area: np.ndarray
    cell_area: np.ndarray
    trig_area: np.ndarray

    def start(self, port: int = 0) -> int: ...

    def stop(self) -> None: ...

    def locked(self) -> AbstractContextManager[None]: ...


class _PlcMaker(Protocol):
    def __call__(self, config: Any, layout: AreaLayout) -> SimPlc: ...


#: The simulated PLC of each protocol, by the names `controller.devices.PLC_DRIVERS` uses: each
#: module has `make_plc(config, layout)`, imported only when a line uses it.
SIM_PLCS: dict[str, str] = {
    "s7": "simulators.s7_plc",
    "modbus": "simulators.modbus_plc",
}


def make_sim_plc(plc: PlcConfig) -> SimPlc:
    """The simulated PLC that serves what a cell config's `plc` section describes."""
    maker = cast(_PlcMaker, import_module(SIM_PLCS[plc.protocol]).make_plc)
    return maker(plc, area_layout(plc.ring_size))


def plc_main(cfg: LineConfig, plc_config: PlcConfig, triggers: Connection, ctl: Connection) -> None:
    """Process entry: the simulated PLC. Talks to its launcher over `ctl`."""
    layout = area_layout(plc_config.ring_size)
    plc = make_sim_plc(plc_config)
    port = plc.start(0)
    pending: list[Trigger] = []
    scan = PlcScan(
        cfg, layout, plc.plc_area, plc.cell_area, pending.append, time.monotonic(), trig_area=plc.trig_area
    )
    scan.feeding = False  # the infeed waits for the cell to inspect
    ctl.send(("port", port))
    next_t = time.monotonic()
    jitter = np.random.default_rng([cfg.seed, 13])
    done_sent = False
    infeed_closed = False
    restore_at: float | None = None
    frozen_until = 0.0
    try:
        while True:
            now = time.monotonic()
            with plc.locked():
                if not scan.feeding and not infeed_closed and scan.registered == 0 and scan.cell_inspecting:
                    scan.feeding = True
                if now >= frozen_until:  # a frozen PLC serves its last scan's data and scans nothing
                    scan.step(now)
            for trig in pending:
                triggers.send(trig)
            pending.clear()
            if restore_at is not None and now >= restore_at:
                plc.start(port)  # the link comes back on the same address
                restore_at = None
            if cfg.parts and scan.registered >= cfg.parts and scan.idle and not done_sent:
                ctl.send(("done", scan.outcomes, scan.dropped_writes))
                done_sent = True
            while ctl.poll():
                msg = ctl.recv()
                if msg[0] == "stop":
                    return
                if msg[0] == "close_infeed":
                    infeed_closed, scan.feeding = True, False
                    ctl.send(("closed", scan.registered))
                elif msg[0] == "request":
                    with plc.locked():
                        ctl.send(("seq", scan.send_request(msg[1], int(msg[2]))))
                elif msg[0] == "result":
                    with plc.locked():
                        ctl.send(("result", scan.request_result(msg[1], int(msg[2]))))
                elif msg[0] == "freeze":
                    frozen_until = time.monotonic() + float(msg[1])
                    ctl.send(("frozen", msg[1]))
                elif msg[0] == "camera_fault":
                    _, k, kind, value = msg
                    span = float(value) if kind in ("drop", "freeze") else 2.0
                    triggers.send(CameraFault(int(k), str(kind), time.monotonic() + span, float(value)))
                    ctl.send(("camera_faulted", k))
                elif msg[0] == "fault":
                    with plc.locked():
                        scan.inject(msg[1], int(msg[2]))
                    ctl.send(("faulted", msg[1]))
                elif msg[0] == "drop_link":
                    plc.stop()  # clients see the connection drop; the scan and the belt go on
                    restore_at = time.monotonic() + float(msg[1])
                    ctl.send(("dropped", port))
                elif msg[0] == "status":
                    with plc.locked():
                        ctl.send(("status", scan.cell_state, scan.registered, len(scan.outcomes)))
                elif msg[0] == "outcomes":
                    ctl.send(("outcomes", list(scan.outcomes), scan.dropped_writes))
            next_t += cfg.scan_s + (
                jitter.uniform(-1.0, 1.0) * cfg.scan_jitter_s if cfg.scan_jitter_s else 0.0
            )
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # overran: do not try to catch up with a burst
    except (EOFError, OSError):  # the launcher is gone (killed, not stopped): stop with it
        return
    finally:
        with contextlib.suppress(OSError):
            triggers.send(None)
        plc.stop()


#: What stops a process group: a terminal's Ctrl-C and hang-up, and SIGTERM to the whole group
#: (`timeout`, `kill -TERM -PGID`). The line's processes leave stopping to their launcher, which
#: drains the cell first; they end when it stops them or when their pipes from it close (it
#: was killed outright).
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)


def line_process(main: Callable[..., None], *args: Any) -> None:
    """Process entry of a line process: `main(*args)`, deaf to the stop signals (its launcher
    stops it, not a signal to its process group)."""
    for sig in TERMINAL_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    main(*args)


def _spawn(proc: Any) -> None:
    """Start a line process that a stop signal to the process group never reaches (mid-import,
    with a traceback each, or under a cell still draining): the launcher stops it. A child
    inherits ignored signals; dispositions can only be set in the main thread, so from another
    thread they are blocked instead, which a new interpreter keeps for SIGHUP and SIGTERM but
    not for SIGINT (the process ignores them all once it runs: `line_process`)."""
    if threading.current_thread() is not threading.main_thread():
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(TERMINAL_SIGNALS))
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return
    # Blocked while ignored, a signal to this process waits (the kernel keeps a blocked signal
    # pending even when ignored) and comes once the handler is back. A handler Python did not
    # install (None) cannot be put back: that signal is left alone.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(TERMINAL_SIGNALS))
    old = {s: h for s in TERMINAL_SIGNALS if (h := signal.getsignal(s)) is not None}
    try:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        proc.start()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


class SimLine:
    """The simulated line as seen from the controller's process."""

    def __init__(
        self,
        cfg: LineConfig,
        plc: PlcConfig | None = None,
        camera_names: list[str] | None = None,
        emulation_folder: Path | None = None,
        camera_sockets: Path | None = None,
    ):
        """`plc`: the cell config's PLC section the simulated PLC serves (default: S7, as the
        demo cell). `emulation_folder`: use pylon's emulated Basler cameras, playing images
        rendered there.

        `camera_sockets`: serve the simulated cameras on UNIX sockets in this folder
        (`camera_address`) for a cell service in another process, instead of `cameras`.
        """
        self.cfg = cfg
        self.emulation_folder = emulation_folder
        self.camera_sockets = camera_sockets
        self.plc = plc or S7Config()
        n = len(cfg.camera_offsets_mm)
        self.camera_names = camera_names or [f"cam{i}" for i in range(n)]
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = []
        self.cameras: list[Camera] = []
        self._rig: Any = None
        self.port = 0
        self._ctl: Connection | None = None
        self.done: tuple[list[Outcome], int] | None = None
        self._ctl_lock = threading.Lock()  # one exchange on the control pipe at a time

    def start(self, timeout: float = 20.0) -> int:
        """Start both processes; returns the PLC's port on 127.0.0.1."""
        self.spawn()
        return self.wait_started(timeout)

    def spawn(self) -> None:
        """Start the processes (call it from the main thread: then Ctrl-C never reaches them)."""
        ctx = self._ctx
        trig_rx, trig_tx = ctx.Pipe(duplex=False)
        ctl_here, ctl_there = ctx.Pipe()
        plc = ctx.Process(
            target=line_process,
            args=(plc_main, self.cfg, self.plc, trig_tx, ctl_there),
            name="sim-plc",
            daemon=True,
        )
        if self.emulation_folder is not None:
            from simulators.pylon_rig import PylonRig

            self._rig = PylonRig(self.cfg, self.camera_names, self.emulation_folder)
            _spawn(plc)
            self._procs = [plc]
            self._rig.start(trig_rx)
            self.cameras = list(self._rig.cameras)
            to_close: tuple[Connection, ...] = (trig_tx, ctl_there)
        else:
            outputs: list[Connection] | list[str]
            frame_pipes = []
            if self.camera_sockets is not None:  # a service in another process connects to these
                self.camera_sockets.mkdir(parents=True, exist_ok=True)
                outputs = [self.camera_address(k) for k in range(len(self.camera_names))]
            else:
                frame_pipes = [ctx.Pipe(duplex=False) for _ in self.camera_names]
                outputs = [tx for _, tx in frame_pipes]
                self.cameras = [
                    SocketCamera(name, rx)
                    for name, (rx, _) in zip(self.camera_names, frame_pipes, strict=True)
                ]
            rig = ctx.Process(
                target=line_process,
                args=(camera_rig_main, trig_rx, outputs, self.cfg.drop_frames, self.cfg.seed),
                name="sim-camera-rig",
                daemon=True,
            )
            _spawn(rig)
            _spawn(plc)
            self._procs = [plc, rig]
            to_close = (trig_rx, trig_tx, ctl_there, *(tx for _, tx in frame_pipes))
        for conn in to_close:
            conn.close()
        self._ctl = ctl_here

    def wait_started(self, timeout: float = 20.0) -> int:
        """Wait until the simulated PLC serves; returns its port on 127.0.0.1."""
        ctl_here = self._ctl
        assert ctl_here is not None, "spawn() first"
        if not ctl_here.poll(timeout):
            self.stop()
            raise RuntimeError("simulated PLC did not start")
        _kind, port = ctl_here.recv()
        self.port = int(port)
        return self.port

    def alive(self) -> bool:
        """Whether every process of the line still runs."""
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def camera_address(self, k: int) -> str:
        """Where simulated camera k is served (with `camera_sockets`)."""
        assert self.camera_sockets is not None
        return str(self.camera_sockets / f"cam{k}.sock")

    def _ask(self, msg: tuple[Any, ...], kind: str, timeout: float = 5.0) -> tuple[Any, ...]:
        with self._ctl_lock:
            return self._ask_locked(msg, kind, timeout)

    def _ask_locked(self, msg: tuple[Any, ...], kind: str, timeout: float) -> tuple[Any, ...]:
        assert self._ctl is not None
        self._ctl.send(msg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ctl.poll(0.05):
                reply = self._ctl.recv()
                if reply[0] == "done":
                    self.done = (reply[1], reply[2])
                    continue
                if reply[0] == kind:
                    return tuple(reply)
        raise TimeoutError(f"simulated PLC did not answer {msg[0]}")

    def _handshake(self, kind: str, value: int, timeout: float) -> int:
        seq = self._ask(("request", kind, value), "seq")[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self._ask(("result", kind, seq), "result")[1]
            if res is not None:
                return int(res)
            time.sleep(0.01)
        raise TimeoutError(f"cell did not answer {kind} request {value}")

    def command(self, code: int, timeout: float = 5.0) -> int:
        """Issue a PackML command through the PLC's command word; returns the cell's result code."""
        return self._handshake("command", code, timeout)

    def request_recipe(self, number: int, timeout: float = 60.0) -> int:
        """Request recipe `number` through the PLC's recipe word; returns the cell's result code."""
        return self._handshake("recipe", number, timeout)

    def drop_link(self, seconds: float) -> None:
        """Take the PLC's server off the network for `seconds` (cable pulled, PLC rebooted)."""
        self._ask(("drop_link", seconds), "dropped")

    def inject(self, fault: str, value: int = 0) -> None:
        """Make the simulated PLC misbehave (see `PlcScan.FAULTS`)."""
        if fault not in PlcScan.FAULTS:
            raise ValueError(f"unknown PLC fault {fault!r} (known: {', '.join(PlcScan.FAULTS)})")
        self._ask(("fault", fault, value), "faulted")

    def freeze(self, seconds: float) -> None:
        """The PLC stops scanning for `seconds` (its program halted): heartbeat and data stand still."""
        self._ask(("freeze", seconds), "frozen")

    def camera_fault(self, camera: int, kind: str, value: float) -> None:
        """Camera `camera` misbehaves: drop/freeze for `value` s, delay by `value` ms or corrupt for 2 s."""
        if kind not in ("drop", "delay", "corrupt", "freeze"):
            raise ValueError(f"unknown camera fault {kind!r}")
        self._ask(("camera_fault", camera, kind, value), "camera_faulted")

    def close_infeed(self) -> int:
        """Stop feeding new parts; returns how many were fed. Parts on the belt run out."""
        return int(self._ask(("close_infeed",), "closed")[1])

    def status(self) -> tuple[int, int, int]:
        """(cell state seen by the PLC, parts registered, parts reported)."""
        _, state, registered, reported = self._ask(("status",), "status")
        return int(state), int(registered), int(reported)

    def wait_done(self, timeout: float) -> tuple[list[Outcome], int]:
        """Wait until every part was fed and reported; returns (outcomes, dropped verdict writes)."""
        assert self._ctl is not None
        deadline = time.monotonic() + timeout
        while self.done is None and time.monotonic() < deadline:
            with self._ctl_lock:
                if self._ctl.poll(0.05):
                    reply = self._ctl.recv()
                    if reply[0] == "done":
                        self.done = (reply[1], reply[2])
            time.sleep(0.001)
        if self.done is None:
            raise TimeoutError("simulated line did not finish")
        return self.done

    def outcomes(self) -> tuple[list[Outcome], int]:
        _, outcomes, dropped = self._ask(("outcomes",), "outcomes")
        return list(outcomes), int(dropped)

    def stop(self) -> None:
        for cam in self.cameras:
            cam.stop()
        if self._ctl is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._ctl.send(("stop",))
        for p in self._procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.kill()  # it ignores SIGTERM (see `_spawn`)
                p.join(timeout=2.0)
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        self._procs = []
        if self._rig is not None:
            self._rig.join()
            self._rig.close()
            self._rig = None
