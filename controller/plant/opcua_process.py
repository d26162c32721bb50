"""The OPC UA server in a process of its own, as the cell sees it: a pipe to it and a pipe back.

asyncua is Python: serving it in the cell's process took CPU and the GIL from the control loop
(README, "Plant connections: overhead"). Here the cell keeps only what feeds the server:

- cell → server (the child's stdin), one JSON line each: the hello (config, data folder,
  control socket, passwords named by variable), then `{"e": event}` (`controller.events.to_dict`)
  and `{"s": status}` (the snapshot the cell pushes every `status_interval_s`, in order with
  the events). `on_event` serialises and appends to a bounded queue; a writer thread writes it
  to the pipe. A full queue (the child slow or stuck) drops the event and counts it: the
  outlet's delivery thread never waits on the child, the control loop never touches the pipe.
- server → cell (the child's stdout), one JSON line each: `{"ready": port}` or `{"error":
  line}` once, `{"figures": ...}` every second and when it stops, `{"log": [level, logger,
  message]}` (its log lines, logged here under their own logger).

Commands and recipe selection go from the child to the cell's control API (`ApiClient`), with
the same checks and refusals as the CLI. A child that dies is logged once and shown in the
figures (running false); the cell goes on inspecting and the server is not restarted (see
the README, "OPC UA server").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from controller.events import Event, to_dict
from controller.plant.opcua_config import OpcUaConfig
from controller.snapshot import StatusSnapshot

log = logging.getLogger(__name__)

#: The child's entry point (`python -m ...`).
CHILD_MODULE = "controller.plant.opcua_child"


class OpcUaProcessError(RuntimeError):
    """The server process could not start; the message says why (one line)."""


@dataclass(frozen=True, slots=True)
class OpcUaProcessFigures:
    """The server process's counts: running (the child is up and serving); clients (its OPC UA
    connections); events written to the pipe; queued (here and in the child, not yet taken);
    result events sent to clients; dropped (the pipe's queue full or the child gone, and the
    child's own inbox); failed (in the child); the child's exit code once it ended."""

    running: bool
    clients: int
    events: int
    queued: int
    results_sent: int
    dropped: int
    failed: int
    exit_code: int | None


class OpcUaProcess:
    """The cell's side of the OPC UA server's process."""

    def __init__(
        self,
        config: OpcUaConfig,
        data_dir: Path,
        api_socket: Path | None,
        env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """`api_socket`: the cell's control socket, for Command and SelectRecipe (None: the
        server refuses them). `env`: where the users' `password_env` variables are read
        (default: this process's environment); they are handed to the child on the pipe, never
        on its command line. `command`: the child's command (tests)."""
        self.config, self.data_dir, self.api_socket = config, data_dir, api_socket
        self._env = env
        self._command = command or [sys.executable, "-m", CHILD_MODULE]
        self._queue: deque[bytes | StatusSnapshot] = deque()
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: str | None = None
        self._closing = False
        self._broken = False  # the pipe to the child failed: nothing more is written
        self.events = self.dropped = 0
        self._writing = 0  # items in the batch being written
        self._child: dict[str, Any] = {}
        self._serving = False

    # ------------------------------------------------------------------ life
    def start(self, timeout_s: float = 60.0) -> None:
        """Spawn the child and wait until it listens. Raises `OpcUaProcessError` (its one-line
        start error: a password, a certificate, a port already taken)."""
        if self._proc is not None:
            raise RuntimeError("the OPC UA server process was started already")
        hello = {
            "config": self.config.model_dump(mode="json"),
            "data_dir": str(self.data_dir),
            "api_socket": str(self.api_socket) if self.api_socket is not None else None,
            "env": self._passwords_env(),
        }
        try:
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
            )
        except OSError as exc:
            raise OpcUaProcessError(f"opcua: cannot start the server process: {exc}") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._proc.stdout,), name="opcua-from-server", daemon=True
        )
        self._reader.start()
        try:
            self._proc.stdin.write(json.dumps(hello).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # it ended already: its exit is reported below
        if not self._ready.wait(timeout_s):
            self.stop()
            raise OpcUaProcessError(f"opcua: the server did not start within {timeout_s:.0f} s")
        if self._start_error is not None:
            self.stop()
            raise OpcUaProcessError(self._start_error)
        self._writer = threading.Thread(
            target=self._write, args=(self._proc.stdin,), name="opcua-to-server", daemon=True
        )
        self._writer.start()
        log.info("opcua: serving %s (security %s), process %d", self.config.endpoint,
                 self.config.security, self._proc.pid)  # fmt: skip

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (up to 2 s), close the pipe (the child closes its sessions and
        ends), wait for it within `timeout_s`, kill it after. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify()
        writer = self._writer
        if writer is not None:
            writer.join(min(2.0, timeout_s))
        if writer is None or not writer.is_alive():
            with contextlib.suppress(OSError, ValueError):  # closing flushes: the child may be gone
                assert proc.stdin is not None
                proc.stdin.close()
        else:  # the child reads nothing: it cannot be asked to stop
            log.warning("opcua: the server process does not read its pipe: killed")
            proc.kill()
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("opcua: the server process did not end within %.0f s: killed", timeout_s)
            proc.kill()
            proc.wait()
        if writer is not None:
            writer.join(1.0)  # the child is gone: its write failed, it ended
        if writer is None or not writer.is_alive():
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.close()
        if self._reader is not None:
            self._reader.join(2.0)

    def _passwords_env(self) -> dict[str, str]:
        env = os.environ if self._env is None else self._env
        names = [u.password_env for u in self.config.users if u.password_env is not None]
        return {n: env[n] for n in names if n in env}

    @property
    def pid(self) -> int | None:
        """The child's process id (None before it started)."""
        return self._proc.pid if self._proc is not None else None

    def figures(self) -> OpcUaProcessFigures:
        """Its counts now, the child's as it last reported them; any thread."""
        c, proc = self._child, self._proc
        return OpcUaProcessFigures(
            self._serving, int(c.get("clients", 0)), self.events,
            len(self._queue) + self._writing + int(c.get("queued", 0)), int(c.get("results_sent", 0)),
            self.dropped + int(c.get("dropped", 0)), int(c.get("failed", 0)),
            proc.returncode if proc is not None else None,
        )  # fmt: skip

    # ----------------------------------------------------------------- feed
    def on_event(self, event: Event) -> None:
        """The outlet's callback: the event as a JSON line onto the bounded queue. Never waits
        on the child: what does not fit is dropped and counted."""
        self._put(b'{"e":' + json.dumps(to_dict(event)).encode() + b"}\n")

    def on_snapshot(self, snap: StatusSnapshot) -> None:
        """The cell's status (taken on its loop), queued as it is: it is serialised on the
        writer thread, not on the loop. Never waits."""
        self._put(snap)

    def _put(self, item: bytes | StatusSnapshot) -> None:
        with self._cond:
            if self._broken or self._closing or len(self._queue) >= self.config.queue_size:
                self.dropped += 1
                return
            self._queue.append(item)
            if len(self._queue) == 1:
                self._cond.notify()

    def _write(self, pipe: IO[bytes]) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:  # closing, and everything written
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._writing = len(batch)
            lines = [item if isinstance(item, bytes) else _status_line(item) for item in batch]
            try:
                pipe.write(b"".join(lines))
                pipe.flush()
            except (OSError, ValueError):  # the child ended (its exit is logged by the reader)
                with self._cond:
                    self._broken = True
                    self.dropped += len(batch) + len(self._queue)
                    self._queue.clear()
                    self._writing = 0
                return
            with self._cond:
                self.events += sum(1 for item in batch if isinstance(item, bytes))
                self._writing = 0

    # ----------------------------------------------------------------- back
    def _read(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue  # not one of its lines
            if not isinstance(msg, dict):
                continue
            if "figures" in msg and isinstance(msg["figures"], dict):
                self._child = msg["figures"]
                self._serving = bool(msg["figures"].get("running", False))
            elif "log" in msg:
                level, name, text = msg["log"]
                logging.getLogger(str(name)).log(int(level), "%s", text)
            elif "ready" in msg:
                self._serving = True
                self._ready.set()
            elif "error" in msg:
                self._start_error = str(msg["error"])
                self._ready.set()
        pipe.close()
        proc = self._proc
        assert proc is not None
        code = proc.wait()
        self._serving = False
        with self._cond:
            self._broken = True
            self._cond.notify()
        if not self._ready.is_set():
            self._start_error = f"opcua: the server process ended before it listened (exit code {code})"
            self._ready.set()
        elif not self._closing and self._start_error is None:  # a start error is raised, not logged
            log.error("opcua: the server process ended (exit code %d): the cell goes on without OPC UA", code)


def _status_line(snap: StatusSnapshot) -> bytes:
    return b'{"s":' + json.dumps(asdict(snap)).encode() + b"}\n"


__all__ = ["CHILD_MODULE", "OpcUaProcess", "OpcUaProcessError", "OpcUaProcessFigures"]
