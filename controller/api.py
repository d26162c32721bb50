"""The local control API: JSON lines over a UNIX socket (mode 0660, folder 0750).

Requests: {"op": "status"}, {"op": "command", "command": "hold"} (optionally with "source":
"console", who sent it; default "api") and
{"op": "recipe_activate", "name": ...}: the three operations of the control facade
(`controller.control.CellControl`), which the server is given and calls, and which `ApiClient`
offers again on the client's side. Replies carry "ok" and, when refused, "error" with the
reason (one line); a refused recipe also "problems", every problem as a list of lines. Every
request gets one reply line, a malformed one too. The server runs on the
service's loop, so a command is applied between two events, never in the middle of one.

It is built so that no client can hurt the line (`ApiLimits`): connections accepted at a
bounded rate by its own accept loop, at most `max_clients` served at once (more are answered
"busy" and closed at once), a deadline for each request line and for the connection's whole
life (a client dribbling bytes does not hold a slot), global rate limits on requests and on
recipe activations, a status serialised at most every `status_max_age_s` and shared by every
client, and accept errors (out of file handles) logged once per interval with a count
instead of asyncio's traceback for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from controller.contract import Command, RecipeResult
from controller.control import CellControl, ControlError
from controller.snapshot import StatusSnapshot, snapshot_from_dict

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
#: Who a command or recipe change over the API may say sent it (the state change's cause, the audit); none
#: given: "api". "opcua": the OPC UA server, which runs in a process of its own.
COMMAND_SOURCES = ("api", "console", "opcua")
_ACCEPT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class ApiLimits:
    """Bounds on what clients may cost the service (defaults suit `cellctl` and the console)."""

    max_request: int = MAX_REQUEST  # bytes in one request line
    max_clients: int = 32  # connections at once; more are answered "busy" and closed
    request_timeout_s: float = 10.0  # for a whole request line to arrive (not per byte)
    connection_s: float = 60.0  # a connection's whole life; a client reconnects for more
    write_timeout_s: float = 5.0  # for a reply to leave when the client does not read
    rate_per_s: float = 200.0  # requests per second over all clients ...
    burst: int = 50  # ... with this many at once
    client_rate_per_s: float = 20.0  # requests per second on one connection ...
    client_burst: int = 10  # ... with this many at once
    max_wait_s: float = 1.0  # a request waits at most this for its turn, else "busy"
    accept_per_s: float = 500.0  # connections accepted per second (refused ones included)
    backlog: int = 64  # connections the kernel holds while the API does not accept
    activate_per_s: float = 1.0  # recipe activations per second over all clients ...
    activate_burst: int = 4  # ... with this many at once; more are answered "busy", not audited
    status_max_age_s: float = 0.1  # status is rebuilt at most this often and shared
    log_interval_s: float = 10.0  # accept errors and refusals: one log line per interval


def _own_folders() -> tuple[Path, ...]:
    """The per-user default socket folders: a service there must be this user's own."""
    folders = [Path(f"/tmp/inspection-cell-{os.getuid()}")]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_absolute():
        folders.insert(0, Path(runtime) / "inspection-cell")
    return tuple(folders)


def default_socket() -> Path:
    """`CELLCTL_SOCKET`, else `$XDG_RUNTIME_DIR/inspection-cell/cell.sock` (private to the user),
    else `/tmp/inspection-cell-$UID/cell.sock`."""
    env = os.environ.get("CELLCTL_SOCKET")
    if env:
        return Path(env)
    return _own_folders()[0] / "cell.sock"


def folder_problem(folder: Path, uid: int | None = None, require_owner: bool = True) -> str | None:
    """Why `folder` is not safe for a control socket (None when it is): a real directory that
    neither group nor others can write, owned by `uid` (default: us) when `require_owner`.
    Otherwise another user could replace the socket and answer in the service's name."""
    uid = os.geteuid() if uid is None else uid
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot inspect it: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if require_owner and st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & 0o022:
        return f"group or others may write to it (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def prepare_socket_folder(path: Path, uid: int | None = None) -> None:
    """Create `path`'s folder (0750) if missing; raise RuntimeError (one line: where and why)
    if it is not safe. The service calls it before opening anything."""
    with contextlib.suppress(OSError):  # a folder we cannot create is reported by the check
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    why = folder_problem(path.parent, uid)
    if why is not None:
        raise RuntimeError(
            f"control socket folder {path.parent} refused: {why}; use a folder of this user with mode 0750 "
            "(set --socket or CELLCTL_SOCKET)"
        )


class _TokenBucket:
    """`rate` tokens a second, at most `burst` saved; `delay` reserves one and says how long to wait."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.t = float(burst), 0.0

    def delay(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate) if self.t else self.tokens
        self.t = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def give_back(self) -> None:
        self.tokens += 1.0


class _OncePerInterval:
    """Logs one line per interval for a repeated event, with how often it happened meanwhile."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = -1e18
        self._since = 0

    def hit(self, now: float, message: str) -> None:
        self._since += 1
        if now - self._last >= self.interval_s:
            log.warning(
                "control API: %s (%d times in the last %.0f s)", message, self._since, self.interval_s
            )
            self._last, self._since = now, 0


def _line(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply).encode() + b"\n"


def _error(text: str) -> bytes:
    return _line({"ok": False, "error": text})


_BAD = 'bad request: expected one JSON object with "op" per line'


class ControlApi:
    """Serves one cell's control facade (status, commands, recipe activation) on `path`."""

    def __init__(self, control: CellControl, path: Path, limits: ApiLimits | None = None) -> None:
        self.control, self.path = control, path
        self.limits = lim = limits or ApiLimits()
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter | None] = {}
        self.counts: Counter[str] = Counter()
        self._accepts = _TokenBucket(lim.accept_per_s, lim.burst)
        self._requests = _TokenBucket(lim.rate_per_s, lim.burst)
        self._activations = _TokenBucket(lim.activate_per_s, lim.activate_burst)
        self._status: tuple[float, bytes] | None = None
        self._accept_log = _OncePerInterval(lim.log_interval_s)
        self._busy_log = _OncePerInterval(lim.log_interval_s)

    async def start(self) -> None:
        prepare_socket_folder(self.path)
        if self.path.exists() or self.path.is_symlink():
            if await asyncio.to_thread(socket_alive, self.path):
                raise RuntimeError(f"another cell service answers on {self.path}")
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o660)
            listener.listen(self.limits.backlog)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._acceptor = asyncio.get_running_loop().create_task(self._accept_loop(), name="api-accept")

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            for writer in list(self._clients.values()):
                if writer is not None:
                    writer.transport.abort()  # the client's read ends; its task finishes by itself
            if self._clients:
                _, pending = await asyncio.wait(list(self._clients), timeout=2.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _accept_loop(self) -> None:
        """Accept at most `accept_per_s` connections a second (the rest wait in the kernel's
        backlog), serve up to `max_clients`, answer the others "busy" and close them at once.
        Out of file handles, it logs once per interval with a count and tries again shortly."""
        loop = asyncio.get_running_loop()
        listener = self._listener
        assert listener is not None
        lim = self.limits
        while True:
            if (wait := self._accepts.delay(loop.time())) > 0:
                await asyncio.sleep(wait)
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                self.counts["accept_errors"] += 1
                name = errno.errorcode.get(exc.errno or 0, "?")
                self._accept_log.hit(loop.time(), f"cannot accept connections: {exc.strerror} ({name})")
                await asyncio.sleep(0.1 if exc.errno in _ACCEPT_ERRNOS else 0.01)
                continue
            if len(self._clients) >= lim.max_clients:
                self._refuse(conn, loop.time())
                continue
            task = loop.create_task(self._client(conn), name="api-client")
            self._clients[task] = None
            task.add_done_callback(self._clients.pop)

    def _refuse(self, conn: socket.socket, now: float) -> None:
        """Answer busy and close, on the raw socket: no streams, no task."""
        lim = self.limits
        self.counts["refused_busy"] += 1
        self._busy_log.hit(now, f"refused a client: {lim.max_clients} clients connected")
        with conn, contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(_error(f"busy: {lim.max_clients} clients are connected (the limit); try again"))
            conn.recv(lim.max_request)  # read what it sent, so the close is not a reset that loses the reply

    async def _client(self, conn: socket.socket) -> None:
        lim = self.limits
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=lim.max_request)
        except OSError:
            conn.close()
            return
        if task is not None:
            self._clients[task] = writer
        self.counts["connections"] += 1
        end = loop.time() + lim.connection_s
        mine = _TokenBucket(lim.client_rate_per_s, lim.client_burst)
        try:
            while (left := min(lim.request_timeout_s, end - loop.time())) > 0:
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), left)
                except asyncio.IncompleteReadError as exc:  # the client closed its side
                    if exc.partial.strip():  # a last request without its newline still gets a reply
                        writer.write(await self._respond(exc.partial, loop, mine))
                        await asyncio.wait_for(writer.drain(), lim.write_timeout_s)
                    break
                except asyncio.LimitOverrunError:
                    self.counts["bad_requests"] += 1
                    writer.write(_error(f"request over {lim.max_request} bytes"))
                    break
                except TimeoutError:
                    self.counts["timeouts"] += 1
                    writer.write(_error(f"no complete request within {left:.1f} s; closing"))
                    break
                reply = await self._respond(line, loop, mine)
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), lim.write_timeout_s)
        except (TimeoutError, ConnectionError):
            self.counts["timeouts"] += 1
        finally:
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that does not read gets nothing more
            else:
                writer.close()

    async def _respond(self, line: bytes, loop: asyncio.AbstractEventLoop, mine: _TokenBucket) -> bytes:
        """One reply line for one request line; never raises. `mine` is the connection's own
        rate limit, checked before the global one so one client cannot spend everyone's share."""
        lim = self.limits
        now = loop.time()
        if (wait := mine.delay(now)) > lim.max_wait_s:
            mine.give_back()
            self.counts["rate_limited"] += 1
            return _error(f"busy: over {lim.client_rate_per_s:g} requests/s on this connection; try again")
        if (shared := self._requests.delay(now)) > lim.max_wait_s:
            self._requests.give_back()
            mine.give_back()
            self.counts["rate_limited"] += 1
            return _error(f"busy: over {lim.rate_per_s:g} requests/s; try again")
        if max(wait, shared) > 0:
            await asyncio.sleep(max(wait, shared))
        try:
            req = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            req = None
        if not isinstance(req, dict) or "op" not in req:
            self.counts["bad_requests"] += 1
            return _error(_BAD)
        try:
            return await self._dispatch(req, loop)
        except Exception as exc:  # a reply, never a dropped connection with a traceback
            self.counts["errors"] += 1
            log.error("control API: %s failed: %s: %s", _short(req.get("op")), type(exc).__name__, exc)
            return _error(f"internal error: {type(exc).__name__}: {str(exc)[:200]}")

    async def _dispatch(self, req: dict[str, Any], loop: asyncio.AbstractEventLoop) -> bytes:
        op = req["op"]
        if op == "status":
            return self._status_line(loop.time())
        if op == "command":
            name = req.get("command")
            cmd = Command.__members__.get(name.upper()) if isinstance(name, str) else None
            if cmd is None or cmd is Command.UNDEFINED:
                known = ", ".join(c.name.lower() for c in Command if c is not Command.UNDEFINED)
                return _error(f"unknown command {_short(name)} (known: {known})")
            source = req.get("source", "api")
            if source not in COMMAND_SOURCES:
                return _error(f"unknown source {_short(source)} (known: {', '.join(COMMAND_SOURCES)})")
            refused = self.control.command(cmd, source)
            self._status = None  # the next status shows what the command did
            try:
                state = self.control.snapshot().state
            except Exception:  # the command stands: a failed status must not read as a refusal
                log.exception("status after command %s", cmd.name)
                state = "UNKNOWN"
            return _line({"ok": refused is None, "state": state, **({"error": refused} if refused else {})})
        if op == "recipe_activate":
            name = req.get("name")
            if not isinstance(name, str) or not name:
                return _error('recipe_activate needs "name": a recipe name')
            source = req.get("source", "api")
            if source not in COMMAND_SOURCES:
                return _error(f"unknown source {_short(source)} (known: {', '.join(COMMAND_SOURCES)})")
            if self._activations.delay(loop.time()) > 0:  # changeovers are rare; a flood is refused here
                self._activations.give_back()
                self.counts["rate_limited"] += 1
                return _line(
                    {
                        "ok": False,
                        "result": "busy",
                        "error": f"busy: over {self.limits.activate_per_s:g} recipe requests/s",
                    }
                )
            result, reason = await self.control.activate_recipe(source, name=name)
            self._status = None
            ok = result.name == "ACTIVE"
            if ok:
                return _line({"ok": True, "result": "active", "detail": reason})
            # A refusal: "error" is one line; "problems" every problem, one string each.
            problems = reason.splitlines() or [""]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return _line(
                {
                    "ok": False,
                    "result": result.name.lower(),
                    "error": problems[0] + more,
                    "problems": problems,
                }
            )
        return _error(f"unknown op {_short(op)} (known: status, command, recipe_activate)")

    def _status_line(self, now: float) -> bytes:
        """The status reply, built at most every `status_max_age_s` and shared by every client."""
        cached = self._status
        if cached is None or now - cached[0] >= self.limits.status_max_age_s:
            status = asdict(self.control.snapshot())
            status["api"] = dict(self.counts)
            cached = self._status = (now, _line({"ok": True, "status": status}))
        return cached[1]


def _short(value: Any) -> str:
    """A client's value for an error message: a short string's repr, else only its type."""
    if isinstance(value, str):
        return repr(value[:40])
    return f"a {type(value).__name__}"


def socket_alive(path: Path) -> bool:
    """Whether something accepts connections on the UNIX socket `path` (blocking, 0.5 s at most)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


class ApiError(ControlError):
    """The service could not be reached or refused the request; the message says why."""


def request(path: Path, payload: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    """One request to the running service (blocking; for the CLI)."""
    if not path.exists():
        raise ApiError(f"no cell service at {path} (is it running? set --socket or CELLCTL_SOCKET)")
    if not path.is_socket():  # a file or folder given by mistake is not a service that stopped
        raise ApiError(f"{path} is not a socket (give --socket the service's control socket)")
    # Whoever can write the socket's folder can put another socket there: not trusted. In the
    # per-user default folders the service must be our own.
    why = folder_problem(path.parent, require_owner=path.parent in _own_folders())
    if why is not None:
        raise ApiError(f"{path}: not trusted: its folder {path.parent}: {why}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps(payload).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n") and len(buf) < (16 << 20):
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
        except OSError as exc:
            raise ApiError(f"cell service at {path}: {exc.strerror or exc}") from None
    try:
        reply: dict[str, Any] = json.loads(buf)
    except (ValueError, RecursionError):
        raise ApiError(f"cell service at {path} sent a malformed reply") from None
    if not isinstance(reply, dict):
        raise ApiError(f"cell service at {path} sent a malformed reply")
    return reply


class ApiClient:
    """The control facade of the cell served on `path` (`CellControl`), for the console and
    the CLI. Blocking calls, except `activate_recipe` (a model load takes seconds); each raises
    `ApiError` when the service cannot be reached."""

    def __init__(
        self, path: Path, timeout: float = 3.0, status_timeout: float = 3.0, activate_timeout: float = 60.0
    ) -> None:
        self.path, self.timeout = path, timeout
        self.status_timeout, self.activate_timeout = status_timeout, activate_timeout

    def command(self, cmd: Command, source: str = "api") -> str | None:
        """`source`: "api" or "console" (who sent it, the state change's cause)."""
        req = {"op": "command", "command": cmd.name.lower(), "source": source}
        reply = request(self.path, req, self.timeout)
        return None if reply.get("ok") else str(reply.get("error"))

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        """`source` ("api", "console" or "opcua"; others are sent as "api") is who asked: the
        audit record's and the recipe event's source."""
        payload = {
            "op": "recipe_activate",
            "name": name if name is not None else str(number),
            "source": source if source in COMMAND_SOURCES else "api",
        }
        reply = await asyncio.to_thread(request, self.path, payload, self.activate_timeout)
        if reply.get("ok"):
            return RecipeResult.ACTIVE, str(reply.get("detail", ""))
        result = RecipeResult.__members__.get(str(reply.get("result", "")).upper(), RecipeResult.NONE)
        problems = reply.get("problems")
        if isinstance(problems, list) and problems:
            return result, "\n".join(str(p) for p in problems)
        return result, str(reply.get("error"))

    def snapshot(self) -> StatusSnapshot:
        reply = request(self.path, {"op": "status"}, self.status_timeout)
        status = reply.get("status")
        if not reply.get("ok") or not isinstance(status, dict):  # busy: the caller retries
            raise ApiError(f"status refused: {reply.get('error')}")
        try:
            return snapshot_from_dict(status)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ApiError(f"cell service at {self.path} sent a malformed status: {exc}") from None
