"""The local control API: JSON lines over a UNIX socket (mode 0660, folder 0750).

Requests: {"op": "status"} and {"op": "command", "command": "hold"}. Replies carry "ok" and,
when refused, "error" with the reason. The server runs on the service's loop, so a command
is applied between two events, never in the middle of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

from controller.core.packml import Command
from controller.service import CellService

log = logging.getLogger(__name__)

MAX_REQUEST = 4096


def default_socket() -> Path:
    env = os.environ.get("CELLCTL_SOCKET")
    return Path(env) if env else Path(f"/tmp/inspection-cell-{os.getuid()}") / "cell.sock"


class ControlApi:
    """Serves one cell's status and commands on `path`."""

    def __init__(self, service: CellService, path: Path) -> None:
        self.service, self.path = service, path
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if await asyncio.to_thread(_alive, self.path):
                raise RuntimeError(f"another cell service answers on {self.path}")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)
        try:
            while line := await asyncio.wait_for(reader.readline(), timeout=30.0):
                reply = await self.handle_async(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def handle_async(self, line: bytes) -> dict[str, Any]:
        """Like `handle`, plus the operations that take time (recipe activation)."""
        try:
            req = json.loads(line)
        except ValueError:
            req = None
        if isinstance(req, dict) and req.get("op") == "recipe_activate":
            result, reason = await self.service.activate_recipe("api", name=str(req.get("name", "")))
            ok = result.name == "ACTIVE"
            return {
                "ok": ok,
                "result": result.name.lower(),
                **({"detail": reason} if ok else {"error": reason}),
            }
        return self.handle(line)

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            op = req["op"]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": 'bad request: expected JSON with "op"'}
        if op == "status":
            return {"ok": True, "status": asdict(self.service.snapshot())}
        if op == "command":
            name = str(req.get("command", "")).upper()
            try:
                cmd = Command[name]
            except KeyError:
                known = ", ".join(c.name.lower() for c in Command if c is not Command.UNDEFINED)
                return {"ok": False, "error": f"unknown command {name.lower()!r} (known: {known})"}
            refused = self.service.command(cmd)
            state = self.service.core.state.name
            return {"ok": refused is None, "state": state, **({"error": refused} if refused else {})}
        return {"ok": False, "error": f"unknown op {op!r}"}


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


class ApiError(Exception):
    """The service could not be reached or refused the request; the message says why."""


def request(path: Path, payload: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    """One request to the running service (blocking; for the CLI)."""
    if not path.exists():
        raise ApiError(f"no cell service at {path} (is it running? set --socket or CELLCTL_SOCKET)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps(payload).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except PermissionError:
            raise ApiError(f"{path}: permission denied (join the service's group)") from None
        except (ConnectionRefusedError, FileNotFoundError):
            raise ApiError(f"cell service at {path} is not running (stale socket)") from None
        except TimeoutError:
            raise ApiError(f"cell service at {path} did not answer within {timeout} s") from None
    try:
        reply: dict[str, Any] = json.loads(buf)
    except ValueError:
        raise ApiError(f"cell service at {path} sent a malformed reply") from None
    return reply
