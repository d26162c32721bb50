"""The OPC UA server's own process: `python -m controller.plant.opcua_child`, spawned by
`opcua_process.OpcUaProcess` (the pipes and their lines are described there).

It serves `opcua_server.OpcUaServer` with the cell's control API as its facade (`ApiClient`,
called on a thread of its own, as the cell's loop would be in process), the events and status
the cell writes on stdin, and its figures and log lines on stdout. It ends when its stdin
closes: the cell stopping it, or the cell gone. SIGINT and SIGTERM are ignored: the cell
decides when it stops (a Ctrl-C or a service stop reaches the whole process group).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from controller.api import ApiClient
from controller.contract import Command, RecipeResult
from controller.control import ControlError
from controller.plant.event_codec import EventDecodeError, event_from_dict
from controller.plant.opcua_config import OpcUaConfig
from controller.plant.opcua_server import SOURCE, OpcUaServer, OpcUaStartError
from controller.snapshot import StatusSnapshot, snapshot_from_dict

log = logging.getLogger(__name__)

#: How often the figures go back to the cell (s).
FIGURES_INTERVAL_S = 1.0


class Channel:
    """The pipe back to the cell: one JSON line per message, from any thread."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe, self._lock = pipe, threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message).encode() + b"\n"
        with self._lock:
            try:
                self._pipe.write(line)
                self._pipe.flush()
            except (OSError, ValueError):
                pass  # the cell is gone: stdin closes too, and this process ends


class ForwardLogs(logging.Handler):
    """Log lines go to the cell, which logs them under their own logger."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.channel.send({"log": [record.levelno, record.name, record.getMessage()]})
        except Exception:
            self.handleError(record)


class NoControl:
    """No control socket was given: commands and recipe changes are refused, said why."""

    def command(self, cmd: Command, source: str = SOURCE) -> str | None:
        raise ControlError("the OPC UA server was started without the cell's control socket")

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        raise ControlError("the OPC UA server was started without the cell's control socket")

    def snapshot(self) -> StatusSnapshot:
        raise ControlError("the status is pushed by the cell")


def serve(hello: dict[str, Any], lines: IO[bytes], channel: Channel) -> int:
    """Serve until `lines` ends; the exit code."""
    config = OpcUaConfig.model_validate(hello["config"])
    # On a cell with few cores the server shares them with the control loop, the cameras and
    # inference: a result event may wait a few ms, a part's verdict may not.
    os.nice(config.process_nice)
    socket_path = hello.get("api_socket")
    control: ApiClient | NoControl = (
        ApiClient(Path(socket_path), timeout=config.call_timeout_s, activate_timeout=config.recipe_timeout_s)
        if socket_path
        else NoControl()
    )
    control_loop = asyncio.new_event_loop()
    threading.Thread(target=control_loop.run_forever, name="opcua-control", daemon=True).start()
    server = OpcUaServer(
        config,
        control,
        control_loop,
        Path(hello["data_dir"]),
        dict(hello.get("env") or {}),
        poll_status=False,
    )
    try:
        server.start()
    except OpcUaStartError as exc:
        channel.send({"error": str(exc)})
        return 1
    channel.send({"ready": server.port})
    stopped = threading.Event()

    def report() -> None:
        while not stopped.wait(FIGURES_INTERVAL_S):
            channel.send({"figures": asdict(server.figures())})

    reporter = threading.Thread(target=report, name="opcua-figures", daemon=True)
    reporter.start()
    bad = 0
    for raw in lines:
        try:
            msg = json.loads(raw)
            if "e" in msg:
                server.on_event(event_from_dict(msg["e"]))
            elif "s" in msg:
                server.on_snapshot(snapshot_from_dict(msg["s"]))
        except (ValueError, TypeError, KeyError, AttributeError, EventDecodeError) as exc:
            bad += 1
            if bad == 1:  # the cell writes these lines: one is enough to see the bug
                log.warning("opcua: a line from the cell could not be read: %s: %s", type(exc).__name__, exc)
    stopped.set()
    reporter.join()
    server.stop()
    channel.send({"figures": asdict(server.figures())})
    return 0


def main() -> int:
    """The child's entry: the hello line, then serve."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    back = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the pipe back
    channel = Channel(back)
    root = logging.getLogger()
    root.handlers[:] = [ForwardLogs(channel)]
    root.setLevel(logging.INFO)
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    stdin = sys.stdin.buffer
    try:
        hello = json.loads(stdin.readline())
        return serve(hello, stdin, channel)
    except Exception as exc:  # one line for the cell, never a traceback
        channel.send({"error": f"opcua: {type(exc).__name__}: {exc}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
