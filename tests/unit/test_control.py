"""The control facade: the API server calls only it, `ApiClient` offers it again over the
socket, and the console drives either."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console

from controller.api import ApiClient, ControlApi, request
from controller.contract import Command, RecipeResult
from controller.control import CellControl, ControlError
from controller.snapshot import StatusSnapshot
from controller.terminal import ConsoleSession


def status(state: str = "STOPPED", parts: int = 0) -> StatusSnapshot:
    return StatusSnapshot(
        state=state, recipe="plate-4h", recipe_hash="0" * 12, provider="CPU", parts=parts, passed=0,
        failed=0, no_decision=0, in_flight=0, parts_per_min=0.0, latency_p50_ms=1.5, latency_p99_ms=2.5,
        rejects_by_reason={"scratch": 2}, cameras={"top": {"frames": 3, "skipped": 0}}, link_up=True,
        heartbeat_age_s=0.01, alarms={13: "PLC link lost"}, recent=[(1, "PASS", "")],
        stage_ms={"infer": (1.0, 2.0)},
    )  # fmt: skip


class Facade:
    """A cell as the facade shows it, and nothing else (no core, no store)."""

    def __init__(self) -> None:
        self.state = "STOPPED"
        self.commands: list[Command] = []
        self.sources: list[str] = []
        self.activations: list[tuple[str, str | None, int | None]] = []

    def command(self, cmd: Command, source: str = "api") -> str | None:
        self.commands.append(cmd)
        self.sources.append(source)
        if cmd is Command.HOLD:
            return "HOLD is not allowed in STOPPED"
        self.state = "EXECUTE"
        return None

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        self.activations.append((source, name, number))
        if name == "plate-4h-long":
            return RecipeResult.ACTIVE, "judges parts from 12 on, model on CPU"
        return RecipeResult.INVALID, "model.path: missing\nfusion.k: over 3"

    def snapshot(self) -> StatusSnapshot:
        return status(self.state, parts=len(self.commands))


def test_the_api_client_offers_the_same_three_operations_over_the_socket(tmp_path: Path) -> None:
    facade = Facade()
    sock = tmp_path / "api" / "cell.sock"

    async def go() -> None:
        api = ControlApi(facade, sock)
        await api.start()
        try:
            client: CellControl = ApiClient(sock)
            assert (await asyncio.to_thread(client.snapshot)).state == "STOPPED"  # now cached
            assert await asyncio.to_thread(client.command, Command.HOLD) == "HOLD is not allowed in STOPPED"
            assert await asyncio.to_thread(client.command, Command.START) is None
            # The status right after a command shows it (not the status cached before).
            assert await asyncio.to_thread(client.snapshot) == status("EXECUTE", parts=2)
            assert await client.activate_recipe("api", name="plate-4h-long") == (
                RecipeResult.ACTIVE,
                "judges parts from 12 on, model on CPU",
            )
            assert await client.activate_recipe("api", number=3) == (
                RecipeResult.INVALID,
                "model.path: missing\nfusion.k: over 3",  # every problem, one a line
            )
        finally:
            await api.stop()

    asyncio.run(asyncio.wait_for(go(), 10.0))
    assert facade.commands == [Command.HOLD, Command.START]
    assert facade.activations == [("api", "plate-4h-long", None), ("api", "3", None)]


def test_the_api_client_says_why_when_there_is_no_service(tmp_path: Path) -> None:
    client = ApiClient(tmp_path / "none.sock")
    for call in (lambda: client.command(Command.START), client.snapshot):
        try:
            call()
        except ControlError as exc:
            assert "no cell service at" in str(exc)
        else:
            raise AssertionError("no error without a service")


def test_the_console_drives_any_facade() -> None:
    facade = Facade()
    session = ConsoleSession(facade)
    session.key("h")
    assert facade.commands == [Command.HOLD]
    assert session.footer() == "hold refused: HOLD is not allowed in STOPPED"
    session.key("s")
    assert facade.commands[-1] is Command.START and session.footer() == "start: accepted, EXECUTE"
    session.key("x")  # stop asks first
    assert facade.commands[-1] is Command.START
    session.key("y")
    assert facade.commands[-1] is Command.STOP
    console = Console(width=120, height=40, record=True, color_system=None, force_terminal=True)
    console.print(session.frame((120, 40)))  # type: ignore[arg-type]
    text = console.export_text()
    assert "EXECUTE" in text and "plate-4h" in text and "PLC link lost" in text


def test_a_command_applied_is_not_reported_refused_when_the_status_after_it_fails(tmp_path: Path) -> None:
    class NoStatus(Facade):
        def snapshot(self) -> StatusSnapshot:
            raise RuntimeError("camera stats unreadable")

    facade = NoStatus()
    sock = tmp_path / "api" / "cell.sock"

    async def go() -> None:
        api = ControlApi(facade, sock)
        await api.start()
        try:
            assert await asyncio.to_thread(ApiClient(sock).command, Command.START) is None  # not a refusal
        finally:
            await api.stop()

    asyncio.run(asyncio.wait_for(go(), 10.0))
    assert facade.commands == [Command.START]


def test_a_command_over_the_api_says_who_sent_it(tmp_path: Path) -> None:
    facade = Facade()
    sock = tmp_path / "api" / "cell.sock"

    async def go() -> None:
        api = ControlApi(facade, sock)
        await api.start()
        try:
            client = ApiClient(sock)
            assert await asyncio.to_thread(client.command, Command.START) is None
            assert await asyncio.to_thread(client.command, Command.START, "console") is None
            # The OPC UA server runs in a process of its own and commands through the API.
            assert await asyncio.to_thread(client.command, Command.START, "opcua") is None
            refused = await asyncio.to_thread(client.command, Command.START, "plc")
            assert refused is not None and "source" in refused
            # A recipe change says who asked too (the audit); an unknown source is refused.
            ok = await asyncio.to_thread(
                request, sock, {"op": "recipe_activate", "name": "plate-4h-long", "source": "opcua"}
            )
            assert ok["ok"] is True
            bad = await asyncio.to_thread(
                request, sock, {"op": "recipe_activate", "name": "plate-4h-long", "source": "plc"}
            )
            assert bad["ok"] is False and "unknown source" in bad["error"]
        finally:
            await api.stop()

    asyncio.run(asyncio.wait_for(go(), 10.0))
    assert facade.sources == ["api", "console", "opcua"]
    assert facade.activations == [("opcua", "plate-4h-long", None)]
