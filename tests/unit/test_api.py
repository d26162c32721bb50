"""The local control API against hostile and broken clients, on a UNIX socket in a tmp folder.

The service behind it is a stand-in: these tests are about the socket server, not the cell.
"""

from __future__ import annotations

import asyncio
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

    def command(self, cmd: Command) -> str | None:
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
