"""The OPC UA server against asyncua's client on 127.0.0.1 (port picked free): browse, read,
result events, methods and who may call them, security, start failures.

The facade is a stub (`StubControl`) called on a loop thread of its own, as the service's loop
would be; events are handed to `on_event` as the outlet would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.ua.uaerrors import BadUserAccessDenied, UaError, UaStatusCodeError
from cryptography.x509.oid import ExtendedKeyUsageOID

from controller.contract import AlarmCode, Command, RecipeResult, State
from controller.control import CellControl, ControlError
from controller.core.packml import StateChanged
from controller.events import AlarmRaised, EventOutlet, LinkDown, PartRecorded
from controller.plant.opcua_config import OpcUaConfig
from controller.plant.opcua_model import VARIABLES
from controller.plant.opcua_server import OpcUaServer, OpcUaStartError
from controller.snapshot import StatusSnapshot
from simulators.modbus_plc import free_port
from tests.unit.test_opcua_model import part, snapshot

T = TypeVar("T")
NS = "urn:inspection-cell:machine-vision"
PASSWORDS = {"vic": "viewer-pw", "olga": "operator-pw", "emil": "engineer-pw"}
ENV = {"VIC_PW": PASSWORDS["vic"], "OLGA_PW": PASSWORDS["olga"]}
USERS = [
    {"name": "vic", "role": "viewer", "password_env": "VIC_PW"},
    {"name": "olga", "role": "operator", "password_env": "OLGA_PW"},
    {"name": "emil", "role": "engineer", "password_file": "emil.pw"},
]


class StubControl:
    """A `CellControl` that answers what a test sets and notes what it was asked, and where."""

    def __init__(self) -> None:
        self.snap = snapshot(state="IDLE")
        self.unreachable = False
        self.refuse: str | None = None
        self.recipe_answer = (RecipeResult.ACTIVE, "judges from part 41 on")
        self.commands: list[Command] = []
        self.sources: list[str] = []
        self.recipes: list[tuple[str, str | None, int | None]] = []
        self.threads: set[str] = set()

    def command(self, cmd: Command, source: str = "api") -> str | None:
        self.threads.add(threading.current_thread().name)
        self.commands.append(cmd)
        self.sources.append(source)
        return self.refuse

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        self.threads.add(threading.current_thread().name)
        self.recipes.append((source, name, number))
        if name == "slow":  # a changeover that outlasts the caller's patience
            await asyncio.sleep(1.0)
        return self.recipe_answer

    def snapshot(self) -> StatusSnapshot:
        self.threads.add(threading.current_thread().name)
        if self.unreachable:
            raise ControlError("the cell is not answering")
        return self.snap


def _check_protocol(c: StubControl) -> CellControl:
    return c  # mypy checks that the stub is a CellControl


@pytest.fixture(scope="module")
def cell_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cell-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("opcua")
    (path / "emil.pw").write_text(PASSWORDS["emil"] + "\n")
    return path


@pytest.fixture(scope="module")
def served(cell_loop: asyncio.AbstractEventLoop, data_dir: Path) -> Iterator[tuple[OpcUaServer, StubControl]]:
    control = StubControl()
    cfg = OpcUaConfig(
        enabled=True, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/cell/", security="none",
        users=USERS, status_interval_s=0.1, simulated=True, recent_results=50, recipe_timeout_s=0.5,
    )  # type: ignore[arg-type]  # fmt: skip
    server = OpcUaServer(cfg, control, cell_loop=cell_loop, data_dir=data_dir, env=ENV)
    server.start()
    yield server, control
    server.stop()
    assert not server.figures().running


@pytest.fixture
def stub(served: tuple[OpcUaServer, StubControl]) -> Iterator[StubControl]:
    control = served[1]
    yield control
    control.__init__()  # type: ignore[misc]  # the next test starts from the same answers


def run(body: Callable[[], Awaitable[T]], timeout_s: float = 10.0) -> T:
    """Run one test's client side, stopping by itself."""

    async def bounded() -> T:
        return await asyncio.wait_for(body(), timeout_s)

    return asyncio.run(bounded())


@asynccontextmanager
async def session(server: OpcUaServer, user: str, password: str | None = None) -> AsyncIterator[Client]:
    client = Client(server.config.endpoint, timeout=5)
    client.set_user(user)
    client.set_password(PASSWORDS.get(user, "") if password is None else password)
    async with client:
        yield client


async def child(client: Client, *path: str) -> Node:
    idx = await client.get_namespace_index(NS)
    return await client.nodes.objects.get_child([f"{idx}:{p}" for p in ("InspectionCell", *path)])


async def wait_value(node: Node, want: Any, timeout_s: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await node.read_value()
        if value == want or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ browse
def test_browse_the_namespace(served: tuple[OpcUaServer, StubControl]) -> None:
    server, _ = served

    async def body() -> None:
        async with session(server, "vic") as c:
            cell = await child(c)
            names = {(await n.read_browse_name()).Name for n in await cell.get_children()}
            assert names == {"VisionStateMachine", "PackTags", "RecipeManagement", "ResultManagement"}
            packtags = {
                (await n.read_browse_name()).Name for n in await (await child(c, "PackTags")).get_children()
            }
            assert packtags == {"Status", "Admin", "Command"}
            for folder in ("Status", "Admin"):
                node = await child(c, "PackTags", folder)
                have = {(await n.read_browse_name()).Name for n in await node.get_children()}
                assert have == {v.name for v in VARIABLES if v.folder == folder}
            method = await child(c, "RecipeManagement", "SelectRecipe")
            assert await method.read_node_class() == ua.NodeClass.Method

    run(body)


# -------------------------------------------------------------- variables
def test_variables_follow_the_status_snapshot(
    served: tuple[OpcUaServer, StubControl], stub: StubControl
) -> None:
    server, _ = served
    stub.snap = snapshot(state="EXECUTE", parts=1234, passed=1200, failed=30, no_decision=4,
                         parts_per_min=1480.0, alarms={21: "reject not confirmed"})  # fmt: skip

    async def body() -> None:
        async with session(server, "vic") as c:
            processed = await child(c, "PackTags", "Admin", "ProdProcessedCount")
            assert await wait_value(processed, 1234) == 1234
            assert await (await child(c, "PackTags", "Admin", "ProdDefectiveCount")).read_value() == 34
            assert await (await child(c, "PackTags", "Status", "StateCurrent")).read_value() == 6
            assert await (await child(c, "PackTags", "Status", "CurMachSpeed")).read_value() == 1480.0
            assert await (await child(c, "PackTags", "Admin", "AlarmIds")).read_value() == [21]
            vision = await (await child(c, "VisionStateMachine", "CurrentState")).read_value()
            sub = await (await child(c, "VisionStateMachine", "OperationalSubstate")).read_value()
            assert (vision, sub) == ("Operational", "ContinuousExecution")

    run(body)
    assert "cell-loop" in stub.threads  # the facade was asked on the cell's loop


def test_variables_follow_events_between_snapshots(
    served: tuple[OpcUaServer, StubControl], stub: StubControl
) -> None:
    server, _ = served
    stub.unreachable = True  # no snapshot from now on: only the events move the variables
    failures = server.figures().status_failures

    async def body() -> None:
        async with session(server, "vic") as c:
            await asyncio.sleep(0.3)
            server.on_event(StateChanged(State.EXECUTE, State.HELD, "hold", "alarm PLC_LINK_LOST", time=1.0))
            server.on_event(
                AlarmRaised(int(AlarmCode.PLC_LINK_LOST), "PLC_LINK_LOST", "PLC link lost", time=1.0)
            )
            server.on_event(LinkDown("timeout", time=1.0))
            state = await child(c, "PackTags", "Status", "StateCurrentName")
            assert await wait_value(state, "HELD") == "HELD"
            assert await (await child(c, "PackTags", "Status", "LinkUp")).read_value() is False
            assert 13 in await (await child(c, "PackTags", "Admin", "AlarmIds")).read_value()

    run(body)
    assert server.figures().status_failures > failures


# ----------------------------------------------------------- result events
class Collect:
    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.events.put_nowait(event)


def test_result_events_carry_the_part(served: tuple[OpcUaServer, StubControl]) -> None:
    server, _ = served
    ev: PartRecorded = part(4711)
    sent = server.figures().results_sent

    async def body() -> None:
        async with session(server, "vic") as c:
            idx = await c.get_namespace_index(NS)
            handler = Collect()
            sub = await c.create_subscription(20, handler)
            etype = await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            await sub.subscribe_events(await child(c), etype)
            server.on_event(ev)
            got = await asyncio.wait_for(handler.events.get(), 5)
            assert got.ResultId == "run-3:4711" and got.PartId == "4711" and got.RunId == "run-3"
            assert got.RecipeId == ev.recipe and got.RecipeNumber == ev.recipe_number
            assert got.RecipeHash == ev.recipe_hash and got.ModelHash == ev.model_hash
            assert got.IsSimulated is True
            assert got.Verdict == "fail" and got.VerdictCode == 2 and got.Reasons == list(ev.reasons)
            assert got.Cameras == ["top", "side"] and got.CameraScores[0] == 0.93
            assert got.LatencyMs == ev.latency_ms
            assert got.Time.timestamp() == pytest.approx(ev.time)
            content = json.loads(got.ResultContent)
            assert content["part_id"] == 4711 and content["verdict"] == "fail"
            assert content["views"][0]["scores"] == [0.1, 0.93]
            # the same result, looked up by its id; an unknown id is not found
            lookup = await child(c, "ResultManagement")
            method = await child(c, "ResultManagement", "GetResultById")
            found, text = await lookup.call_method(method.nodeid, "run-3:4711")
            assert found is True and json.loads(text) == content
            assert await lookup.call_method(method.nodeid, "run-3:1") == [False, ""]
            await sub.delete()

    run(body)
    assert server.figures().results_sent == sent + 1


# ------------------------------------------------------------------ methods
async def call(client: Client, path: tuple[str, ...], *args: Any) -> Any:
    parent, method = await child(client, *path[:-1]), await child(client, *path)
    return await parent.call_method(method.nodeid, *args)


SELECT = ("RecipeManagement", "SelectRecipe")
COMMAND = ("PackTags", "Command")


def test_select_recipe_accepted(served: tuple[OpcUaServer, StubControl], stub: StubControl) -> None:
    server, _ = served

    async def body() -> Any:
        async with session(server, "emil") as c:
            return await call(c, SELECT, "can", ua.Variant(0, ua.VariantType.Int32))

    assert run(body) == ["active", 1, "judges from part 41 on"]
    assert stub.recipes == [("opcua", "can", None)]
    assert "cell-loop" in stub.threads


def test_select_recipe_refused_says_why(served: tuple[OpcUaServer, StubControl], stub: StubControl) -> None:
    server, _ = served
    stub.recipe_answer = (RecipeResult.NOT_SAFE, "the line is inspecting: hold or stop it first")

    async def body() -> Any:
        async with session(server, "emil") as c:
            by_number = await call(c, SELECT, "", ua.Variant(3, ua.VariantType.Int32))
            neither = await call(c, SELECT, "", ua.Variant(0, ua.VariantType.Int32))
            return by_number, neither

    by_number, neither = run(body)
    assert by_number == ["not_safe", 6, "the line is inspecting: hold or stop it first"]
    assert neither[0] == "invalid" and "name or a number" in neither[2]
    assert stub.recipes == [("opcua", None, 3)]


def test_operator_commands_viewer_is_refused(
    served: tuple[OpcUaServer, StubControl], stub: StubControl
) -> None:
    server, _ = served

    async def body() -> None:
        async with session(server, "vic") as c:
            with pytest.raises(BadUserAccessDenied):
                await call(c, COMMAND, "start")
            with pytest.raises(BadUserAccessDenied):
                await (await child(c, "PackTags", "Status", "RecipeName")).write_value("hacked")
        async with session(server, "olga") as c:
            assert await call(c, COMMAND, "hold") == [True, ""]
            stub.refuse = "hold is not allowed in HELD"
            assert await call(c, COMMAND, "4") == [False, "hold is not allowed in HELD"]
            accepted, reason = await call(c, COMMAND, "jump")
            assert accepted is False and reason.startswith("unknown command 'jump'")
            with pytest.raises(BadUserAccessDenied):  # recipes are for engineers
                await call(c, SELECT, "can", ua.Variant(0, ua.VariantType.Int32))

    run(body)
    assert stub.commands == [Command.HOLD, Command.HOLD]
    assert stub.sources == ["opcua", "opcua"]  # the state change says who commanded it
    assert stub.recipes == []


def test_wrong_password_and_anonymous_refused(served: tuple[OpcUaServer, StubControl]) -> None:
    server, _ = served

    async def body() -> None:
        with pytest.raises(UaStatusCodeError):
            async with session(server, "olga", password="guess"):
                pass
        anonymous = Client(server.config.endpoint, timeout=5)
        with pytest.raises(UaStatusCodeError):
            async with anonymous:
                pass

    run(body)


def test_anonymous_sessions_are_viewers_where_allowed(cell_loop: asyncio.AbstractEventLoop) -> None:
    cfg = OpcUaConfig(
        enabled=True, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/cell/", security="none", anonymous=True
    )
    server = OpcUaServer(cfg, StubControl(), cell_loop=cell_loop)
    server.start()

    async def body() -> None:
        async with Client(cfg.endpoint, timeout=5) as c:  # no user: anonymous
            assert await (await child(c, "PackTags", "Status", "StateCurrentName")).read_value() == "IDLE"
            idx = await c.get_namespace_index(NS)
            sub = await c.create_subscription(50, Collect())
            etype = await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            await sub.subscribe_events(await child(c), etype)
            with pytest.raises(BadUserAccessDenied):  # a viewer
                await call(c, COMMAND, "start")

    try:
        run(body)
    finally:
        server.stop()


def test_an_anonymous_only_endpoint_offers_no_password_and_warns_of_none(
    cell_loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """With no users, no user name token is offered: a password could only travel in plain text
    on security none, and asyncua says so at every start (issue 15: the demo's --opcua)."""
    cfg = OpcUaConfig(
        enabled=True, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/cell/", security="none", anonymous=True
    )
    server = OpcUaServer(cfg, StubControl(), cell_loop=cell_loop)
    with caplog.at_level(logging.WARNING, logger="asyncua"):
        server.start()

    async def body() -> list[ua.UserTokenType]:
        async with Client(cfg.endpoint, timeout=5) as c:
            return [t.TokenType for e in await c.get_endpoints() for t in e.UserIdentityTokens]

    try:
        tokens = run(body)
    finally:
        server.stop()
    assert tokens == [ua.UserTokenType.Anonymous]
    assert [r.getMessage() for r in caplog.records if "plaintext" in r.getMessage()] == []


# --------------------------------------------------------- never blocking
def test_on_event_never_blocks_and_counts_what_it_drops(cell_loop: asyncio.AbstractEventLoop) -> None:
    cfg = OpcUaConfig(endpoint="opc.tcp://127.0.0.1:4840/", security="none", queue_size=2)
    server = OpcUaServer(cfg, StubControl(), cell_loop=cell_loop)
    server.on_event(part())  # not started: dropped, counted
    assert server.figures().dropped == 1 and not server.figures().running


# ---------------------------------------------------------------- security
def client_certificate(folder: Path, name: str, keys: Path) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.der", keys / f"{name}-key.pem"  # keys apart: the folder is read whole
    asyncio.run(
        setup_self_signed_certificate(
            key, cert, f"urn:test:{name}", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {}
        )
    )
    return cert, key


async def read_encrypted(endpoint: str, cert: Path, key: Path, name: str) -> Any:
    client = Client(endpoint, timeout=5)
    client.application_uri = f"urn:test:{name}"
    await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
    client.set_user("emil")
    client.set_password(PASSWORDS["emil"])
    async with client:
        return await (await child(client, "PackTags", "Status", "StateCurrentName")).read_value()


def test_basic256sha256_with_a_certificate_made_on_first_start(tmp_path: Path) -> None:
    (tmp_path / "emil.pw").write_text(PASSWORDS["emil"])
    (tmp_path / "trusted").mkdir()
    trusted = client_certificate(tmp_path / "trusted", "known", tmp_path)
    stranger = client_certificate(tmp_path, "stranger", tmp_path)
    cfg = OpcUaConfig(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}/cell/", users=USERS, certificate="pki/cell.der",
        private_key="pki/cell-key.pem", trusted_clients="trusted",
    )  # type: ignore[arg-type]  # fmt: skip
    assert cfg.security == "basic256sha256"
    server = OpcUaServer(cfg, StubControl(), data_dir=tmp_path, env=ENV)
    server.start()
    try:
        cert, key = tmp_path / "pki/cell.der", tmp_path / "pki/cell-key.pem"
        assert cert.is_file() and key.is_file()
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600

        async def body() -> Any:
            plain = Client(cfg.endpoint, timeout=5)
            plain.set_user("emil")
            plain.set_password(PASSWORDS["emil"])
            with pytest.raises(UaError):  # no endpoint without security to connect to
                async with plain:
                    pass
            with pytest.raises(UaStatusCodeError):  # a certificate the cell does not trust
                await read_encrypted(cfg.endpoint, *stranger, "stranger")
            return await read_encrypted(cfg.endpoint, *trusted, "known")

        assert run(body, 20.0) == "IDLE"
    finally:
        server.stop()


def test_start_refused_when_a_password_cannot_be_read(tmp_path: Path) -> None:
    cfg = OpcUaConfig(endpoint="opc.tcp://127.0.0.1:4840/", security="none", users=USERS)  # type: ignore[arg-type]
    server = OpcUaServer(cfg, StubControl(), data_dir=tmp_path, env={})
    with pytest.raises(OpcUaStartError, match="VIC_PW is not set"):
        server.start()


def test_start_refused_when_the_port_is_taken(
    served: tuple[OpcUaServer, StubControl], data_dir: Path
) -> None:
    server, _ = served
    second = OpcUaServer(server.config, StubControl(), data_dir=data_dir, env=ENV)
    with pytest.raises(OpcUaStartError, match="cannot listen on"):
        second.start()
    second.stop()


def test_a_silent_client_and_an_event_flood_block_nothing(served: tuple[OpcUaServer, StubControl]) -> None:
    server, _ = served
    before = server.figures()
    flood = 3000

    async def body() -> float:
        # A client that connects and then says nothing, and one that subscribes and never reads.
        silent = await asyncio.open_connection("127.0.0.1", server.config.port)
        async with session(server, "vic") as c:
            idx = await c.get_namespace_index(NS)
            sub = await c.create_subscription(1000, Collect())
            await sub.subscribe_events(
                await child(c), await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            )
            assert server.figures().clients >= 2
            slowest = 0.0
            for i in range(flood):
                t = time.perf_counter()
                server.on_event(part(10_000 + i))
                slowest = max(slowest, time.perf_counter() - t)
            # the server still answers others meanwhile
            async with session(server, "olga") as other:
                assert await (await child(other, "PackTags", "Status", "UnitModeCurrent")).read_value() == 1
            last = await child(c, "PackTags", "Status", "LastResultId")
            deadline = time.monotonic() + 5
            while server.figures().events + server.figures().dropped < before.events + before.dropped + flood:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert (await last.read_value()).startswith("run-3:1")
        silent[1].close()
        return slowest

    slowest = run(body, 20.0)
    after = server.figures()
    assert slowest < 0.05  # a lock and an append: never a wait on the server's loop
    assert after.events - before.events + after.dropped - before.dropped == flood


def test_a_slow_recipe_change_times_out_and_blocks_no_one(
    served: tuple[OpcUaServer, StubControl], stub: StubControl
) -> None:
    server, _ = served

    async def body() -> tuple[Any, float]:
        async with session(server, "emil") as eng, session(server, "vic") as viewer:
            state = await child(viewer, "PackTags", "Status", "StateCurrentName")
            slow = asyncio.create_task(call(eng, SELECT, "slow", ua.Variant(0, ua.VariantType.Int32)))
            await asyncio.sleep(0.05)
            t = time.perf_counter()
            await state.read_value()  # another client, answered while the change is under way
            read_s = time.perf_counter() - t
            assert not slow.done()
            return await slow, read_s

    answer, read_s = run(body)
    assert (
        answer[0] == "none"
        and answer[2] == "the cell did not answer within 0.5 s; the change may still complete"
    )
    assert read_s < 0.4


def test_wired_to_the_event_outlet(served: tuple[OpcUaServer, StubControl]) -> None:
    """The service's wiring, in small: the outlet's delivery thread calls `on_event`."""
    server, _ = served
    outlet = EventOutlet()
    outlet.subscribe("opcua", server.on_event, queue_size=server.config.queue_size)

    async def body() -> Any:
        async with session(server, "vic") as c:
            idx = await c.get_namespace_index(NS)
            handler = Collect()
            sub = await c.create_subscription(20, handler)
            etype = await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            await sub.subscribe_events(await child(c), etype)
            outlet.publish(replace(part(9001), time=None))  # the outlet stamps it
            got = await asyncio.wait_for(handler.events.get(), 5)
            return got.ResultId, got.Time.timestamp()

    try:
        rid, when = run(body)
    finally:
        figures = outlet.close()
    assert rid == "run-3:9001" and abs(when - time.time()) < 60
    assert figures["opcua"].delivered >= 1 and figures["opcua"].dropped == 0


def test_a_bad_event_is_counted_and_the_next_one_still_shown(served: tuple[OpcUaServer, StubControl]) -> None:
    server, _ = served
    before = server.figures()
    server.on_event(replace(part(77), verdict=None))  # type: ignore[arg-type]  # a bug upstream

    async def body() -> Any:
        async with session(server, "vic") as c:
            server.on_event(part(78))
            return await wait_value(await child(c, "PackTags", "Status", "LastResultId"), "run-3:78")

    assert run(body) == "run-3:78"
    after = server.figures()
    assert after.failed == before.failed + 1 and after.running
