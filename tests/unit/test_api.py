"""The local control API against hostile and broken clients, on a UNIX socket in a tmp folder.

The service behind it is a stand-in: these tests are about the socket server, not the cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.api import ApiLimits, ControlApi
from controller.contract import RecipeResult
from controller.core.packml import Command
from controller.service import StatusSnapshot


class StubService:
    """What the API asks of a cell service: a snapshot, commands and recipe activation."""

    def __init__(self) -> None:
        self.core = SimpleNamespace(state=SimpleNamespace(name="EXECUTE"))
        self.snapshots = 0
        self.commands: list[Command] = []

    def snapshot(self) -> StatusSnapshot:
        self.snapshots += 1
        return StatusSnapshot(
            state="EXECUTE", recipe="plate-4h", recipe_hash="0" * 12, provider="CPU", parts=self.snapshots,
            passed=0, failed=0, no_decision=0, in_flight=0, parts_per_min=0.0, latency_p50_ms=0.0,
            latency_p99_ms=0.0, rejects_by_reason={}, cameras={}, link_up=True, heartbeat_age_s=0.0,
            alarms={}, recent=[],
        )  # fmt: skip

    def command(self, cmd: Command, source: str = "api") -> str | None:
        self.commands.append(cmd)
        return None

    async def activate_recipe(self, source: str, name: str | None = None) -> tuple[RecipeResult, str]:
        return RecipeResult.UNKNOWN_NUMBER, f"no recipe {name}"


@asynccontextmanager
async def serving(tmp_path: Path, **kw: Any) -> AsyncIterator[tuple[ControlApi, StubService, Path]]:
    service = StubService()
    sock = tmp_path / "api" / "cell.sock"
    api = ControlApi(service, sock, **kw)  # type: ignore[arg-type]
    await api.start()
    try:
        yield api, service, sock
    finally:
        await api.stop()


async def ask(sock: Path, payload: bytes, timeout: float = 3.0) -> tuple[dict[str, Any] | None, bytes]:
    """Send raw bytes; the first reply line (parsed) and everything until the server closes."""
    reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 20)
    try:
        writer.write(payload)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return (json.loads(line) if line else None), line
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 30.0))


# ------------------------------------------------------------------ item 8: malformed requests
MALFORMED = [
    ("deep array", b"[" * 100_000 + b"]" * 100_000, "bad request"),
    ("deep object", b'{"a":' * 3000 + b"1" + b"}" * 3000, "bad request"),
    ("deep op", b'{"op": ' + b"[" * 500 + b"]" * 500 + b"}", "unknown op"),
    ("not json", b"hello", "bad request"),
    ("not utf-8", b'{"op": "\xff\xfe"}', "bad request"),
    ("a list", b'["status"]', "bad request"),
    ("op not a string", b'{"op": {"x": 1}}', "unknown op"),
    ("huge number", b'{"op": "status", "x": ' + b"9" * 3000 + b"}", None),
    ("command not a string", b'{"op": "command", "command": [1, 2]}', "unknown command"),
    ("name not a string", b'{"op": "recipe_activate", "name": {"a": [1]}}', None),
    ("nan", b'{"op": "status", "x": NaN}', None),
]


@pytest.mark.parametrize(("case", "payload", "error"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_request_gets_an_error_reply_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, payload: bytes, error: str | None
) -> None:
    async def go() -> None:
        async with serving(tmp_path, limits=ApiLimits(max_request=1 << 20)) as (_, _, sock):
            reply, raw = await ask(sock, payload + b"\n")
            assert reply is not None, f"{case}: closed without a reply"
            assert isinstance(reply.get("ok"), bool), raw[:200]
            if error is not None:
                assert not reply["ok"] and error in reply["error"], reply
            assert len(raw) < 2000  # the reply does not echo a huge request back
            # The connection still serves the next request.
            again, _ = await ask(sock, b'{"op": "status"}\n')
            assert again is not None and again["ok"]

    with caplog.at_level(logging.DEBUG):
        run(go)
    assert "Traceback" not in caplog.text and "exception" not in caplog.text.lower(), caplog.text


def test_request_over_the_size_limit_is_refused_with_a_reply(tmp_path: Path) -> None:
    async def go() -> None:
        async with serving(tmp_path) as (api, _, sock):
            reply, _ = await ask(
                sock, b'{"op": "status", "pad": "' + b"x" * (2 * api.limits.max_request) + b'"}\n'
            )
            assert reply is not None and not reply["ok"] and "bytes" in reply["error"], reply

    run(go)


# ------------------------------------------------ item 2: connection cap, deadlines, accept errors
async def eof_within(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes; fails if it stays open past `timeout`."""
    return await asyncio.wait_for(reader.read(), timeout)


def test_connections_over_the_cap_are_refused_at_once_and_the_api_answers_again(tmp_path: Path) -> None:
    async def go() -> None:
        async with serving(tmp_path, limits=ApiLimits(max_clients=4)) as (api, _, sock):
            held = [await asyncio.open_unix_connection(str(sock)) for _ in range(4)]
            await asyncio.sleep(0.1)
            extra = [await asyncio.open_unix_connection(str(sock)) for _ in range(20)]
            for r, w in extra:
                got = await eof_within(r, 2.0)  # answered and closed promptly, not left hanging
                assert b"busy" in got and json.loads(got)["ok"] is False
                w.close()
            assert api.counts["refused_busy"] == 20
            refused, _ = await ask(sock, b'{"op": "status"}\n')
            assert refused is not None and "busy" in refused["error"]
            for _, w in held:
                w.close()
                await w.wait_closed()
            await asyncio.sleep(0.1)
            reply, _ = await ask(sock, b'{"op": "status"}\n')
            assert reply is not None and reply["ok"] and reply["status"]["api"]["refused_busy"] == 21

    run(go)


def test_idle_and_dribbling_clients_are_closed_by_deadlines(tmp_path: Path) -> None:
    limits = ApiLimits(request_timeout_s=0.5, connection_s=1.5)

    async def dribble(sock: Path, chunk: bytes, every: float) -> float:
        """Send `chunk` every `every` s until the server closes; how long it stayed."""
        reader, writer = await asyncio.open_unix_connection(str(sock))
        t0 = asyncio.get_running_loop().time()
        closed = asyncio.ensure_future(reader.read())
        try:
            while not closed.done():
                with contextlib.suppress(ConnectionError):
                    writer.write(chunk)
                await asyncio.wait([closed], timeout=every)
                assert asyncio.get_running_loop().time() - t0 < 5.0, f"{chunk!r} kept the connection"
            return asyncio.get_running_loop().time() - t0
        finally:
            writer.close()

    async def go() -> None:
        async with serving(tmp_path, limits=limits) as (api, _, sock):
            idle = await dribble(sock, b"", 0.1)
            byte_by_byte = await dribble(sock, b" ", 0.1)  # never a whole line
            requests = await dribble(sock, b'{"op": "status"}\n', 0.2)  # whole requests, forever
            assert 0.4 < idle < 1.5 and 0.4 < byte_by_byte < 1.5, (idle, byte_by_byte)
            assert 1.3 < requests < 2.5, requests
            assert api.counts["timeouts"] >= 2

    run(go)


ACCEPT_SERVER = """
import asyncio, logging, resource, sys
from pathlib import Path
from controller.api import ApiLimits, ControlApi
from tests.unit.test_api import StubService

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))

async def main():
    api = ControlApi(StubService(), Path(sys.argv[1]), ApiLimits(max_clients=10_000, log_interval_s=60))
    await api.start()
    print("listening", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await api.stop()
    print("accept_errors", api.counts["accept_errors"], flush=True)

asyncio.run(main())
"""


def test_accept_errors_out_of_file_handles_are_logged_once_with_a_count(tmp_path: Path) -> None:
    """A server with few file handles and a flood of connections: EMFILE on accept, logged
    once per interval (asyncio's default logs a traceback for each failure)."""
    import socket
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    sock = tmp_path / "s" / "cell.sock"
    proc = subprocess.Popen(
        [sys.executable, "-c", ACCEPT_SERVER, str(sock)], cwd=root, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        for _ in range(120):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                c.connect(str(sock))
            clients.append(c)
        time.sleep(2.5)  # asyncio retries the accept after 1 s: more failures
    finally:
        for c in clients:
            c.close()
        out, err = proc.communicate("stop\n", timeout=30)
    errors = int(out.split("accept_errors")[1])
    assert errors > 1, (out, err)
    assert "Traceback" not in err, err[:2000]
    lines = [ln for ln in err.splitlines() if "cannot accept" in ln]
    assert len(lines) == 1 and "Too many open files" in lines[0] and "times in the last" in lines[0], err


# ------------------------------------------------------------- item 5: the socket's folder
def test_default_socket_prefers_xdg_runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    from controller.api import default_socket

    monkeypatch.delenv("CELLCTL_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_socket() == tmp_path / "inspection-cell" / "cell.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_socket() == Path(f"/tmp/inspection-cell-{os.getuid()}/cell.sock")
    monkeypatch.setenv("CELLCTL_SOCKET", str(tmp_path / "x.sock"))
    assert default_socket() == tmp_path / "x.sock"


def unsafe_folder(tmp_path: Path, kind: str) -> Path:
    import os

    folder = tmp_path / kind
    if kind == "symlink":
        (tmp_path / "real").mkdir(mode=0o750)
        folder.symlink_to(tmp_path / "real")
    elif kind == "file":
        folder.write_text("")
    else:
        folder.mkdir()
        os.chmod(folder, {"world-writable": 0o777, "group-writable": 0o770}.get(kind, 0o750))
        if kind == "someone else's":
            if os.geteuid() != 0:
                pytest.skip("needs root to give a folder away")
            os.chown(folder, 65534, 65534)
    return folder


UNSAFE = [
    ("world-writable", "others may write to it (mode 0777)"),
    ("group-writable", "group or others may write to it (mode 0770)"),
    ("someone else's", "owned by uid 65534, not by this user"),
    ("symlink", "symbolic link"),
    ("file", "not a directory"),
]


@pytest.mark.parametrize(("kind", "why"), UNSAFE, ids=[u[0] for u in UNSAFE])
def test_service_refuses_an_unsafe_socket_folder_and_says_why(tmp_path: Path, kind: str, why: str) -> None:
    folder = unsafe_folder(tmp_path, kind)

    async def go() -> None:
        api = ControlApi(StubService(), folder / "cell.sock")  # type: ignore[arg-type]
        with pytest.raises(RuntimeError) as err:
            await api.start()
        msg = str(err.value)
        assert why in msg and str(folder) in msg and "\n" not in msg, msg
        assert not (folder / "cell.sock").exists()

    run(go)


def test_client_refuses_a_socket_in_a_folder_others_can_write(tmp_path: Path) -> None:
    """A swapped socket must not be believed: the CLI refuses before it connects."""
    import os
    import socket

    from controller.api import ApiError, request

    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fake:
        fake.bind(str(folder / "cell.sock"))
        fake.listen()
        with pytest.raises(ApiError, match=r"not trusted.*may write to it"):
            request(folder / "cell.sock", {"op": "status"}, timeout=0.5)


def test_cellctl_run_refuses_an_unsafe_socket_folder_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from controller.daemon import RunOptions, run_service

    root = Path(__file__).resolve().parents[2]
    folder = unsafe_folder(tmp_path, "world-writable")
    opts = RunOptions(
        root / "recipes/cells/demo-cell.yaml", "plate-4h", root / "recipes", tmp_path, folder / "cell.sock"
    )
    with caplog.at_level(logging.INFO):
        assert run_service(opts) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "control socket folder" in errors[0] and "mode 0777" in errors[0], errors
    assert "Traceback" not in caplog.text


# ------------------------------------------------------------- item 3: API load is bounded
def test_status_is_built_at_most_every_max_age_whatever_the_load(tmp_path: Path) -> None:
    async def go() -> None:
        limits = ApiLimits(status_max_age_s=0.1, rate_per_s=10_000, burst=10_000, accept_per_s=10_000)
        gate = asyncio.Semaphore(20)

        async def one(sock: Path) -> tuple[dict[str, Any] | None, bytes]:
            async with gate:
                return await ask(sock, b'{"op": "status"}\n')

        async with serving(tmp_path, limits=limits) as (_, service, sock):
            t0 = asyncio.get_running_loop().time()
            replies = await asyncio.gather(*(one(sock) for _ in range(300)))
            took = asyncio.get_running_loop().time() - t0
            ok = [r for r, _ in replies if r is not None and r["ok"]]
            assert len(ok) > 250
            assert service.snapshots <= took / 0.1 + 2, (service.snapshots, took)

    run(go)


def test_requests_and_recipe_activations_are_rate_limited(tmp_path: Path) -> None:
    calls: list[str] = []

    async def go() -> None:
        limits = ApiLimits(rate_per_s=50, burst=10, max_wait_s=0.2, activate_per_s=1, activate_burst=2)
        async with serving(tmp_path, limits=limits) as (api, service, sock):

            async def activate(source: str, name: str | None = None) -> Any:
                calls.append(str(name))
                return RecipeResult.UNKNOWN_NUMBER, "no such recipe"

            service.activate_recipe = activate  # type: ignore[method-assign]
            req = b'{"op": "recipe_activate", "name": "x"}\n'
            got = await asyncio.gather(*(ask(sock, req) for _ in range(20)))
            results = [r["result"] for r, _ in got if r is not None]
            assert len(results) == 20 and len(calls) <= 3, (results, calls)
            assert results.count("busy") >= 17
            t0 = asyncio.get_running_loop().time()
            statuses = await asyncio.gather(*(ask(sock, b'{"op": "status"}\n') for _ in range(30)))
            took = asyncio.get_running_loop().time() - t0
            errors = [r["error"] for r, _ in statuses if r is not None and not r["ok"]]
            assert all("requests/s" in e for e in errors) and errors, errors  # over 50/s: refused
            assert took < 2.0
            assert api.counts["rate_limited"] >= 17 + len(errors)

    run(go)


def test_one_connection_cannot_spend_every_clients_share(tmp_path: Path) -> None:
    """A client pipelining requests on one connection is slowed to its own rate; others are
    served meanwhile at once."""

    async def go() -> None:
        limits = ApiLimits(client_rate_per_s=20, client_burst=5, rate_per_s=1000, burst=100)
        async with serving(tmp_path, limits=limits) as (_, _, sock):
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 22)
            t0 = loop.time()
            writer.write(b'{"op": "status"}\n' * 60)
            await asyncio.sleep(0.3)
            t1 = loop.time()
            other = await asyncio.gather(*(ask(sock, b'{"op": "status"}\n') for _ in range(10)))
            assert loop.time() - t1 < 1.0 and all(r is not None and r["ok"] for r, _ in other)
            replies = [json.loads(await asyncio.wait_for(reader.readline(), 10.0)) for _ in range(60)]
            took = loop.time() - t0
            writer.close()
            assert all(r["ok"] for r in replies)
            assert took > (60 - 5) / 20 * 0.9, took  # held to 20 requests/s after a burst of 5

    run(go)


def test_a_last_request_without_newline_is_answered(tmp_path: Path) -> None:
    async def go() -> None:
        async with serving(tmp_path) as (_, _, sock):
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(b'{"op": "status"}')
            writer.write_eof()
            reply = json.loads(await asyncio.wait_for(reader.readline(), 3.0))
            writer.close()
            assert reply["ok"] and reply["status"]["state"] == "EXECUTE"

    run(go)
