"""The cell's OPC UA server: its state, results and recipe selection for the plant (OPC 40100 / PackTags).

A subscriber of the event outlet and a user of the control facade. The cell runs it in a
process of its own (`opcua_child`, fed through `opcua_process`), with the control API as its
facade and the status pushed (`poll_status` false); in process, as the tests run it, it works
alike. It runs on a thread of its own with its own asyncio loop, so its caller never waits
on it: `on_event` (the outlet's callback) only appends to a bounded inbox, counting what does
not fit; the facade is called on `cell_loop` from the server's, with a timeout. asyncua bounds what a slow
client can hold (each monitored item's queue, the unacknowledged notifications), so a client
that stops reading loses its own notifications and slows nothing else.

Lifecycle: `start()` (raises `OpcUaStartError` with a one-line reason), `on_event` from the
outlet, `figures()` for the status, `stop()` once. The nodes are declared in `opcua_model`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from controller.contract import Command, RecipeResult
from controller.control import CellControl
from controller.events import Event, PartRecorded, StateChanged
from controller.plant.opcua_access import CellUsers, RoleRules, client_validator, ensure_certificate
from controller.plant.opcua_config import OpcUaConfig, SecretError, read_password
from controller.plant.opcua_model import (
    RESULT_FIELDS,
    VARIABLES,
    CellView,
    ResultRing,
    result_fields,
)
from controller.snapshot import StatusSnapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Who the commands and recipe changes made here are audited as (a state change's cause).
SOURCE = "opcua"

#: The objects variables sit in: (browse path under the cell object).
_FOLDERS = {
    "VisionStateMachine": "VisionStateMachine",
    "Status": "PackTags/Status",
    "Admin": "PackTags/Admin",
}


class OpcUaStartError(RuntimeError):
    """The server could not start; the message says why (one line)."""


@dataclass(frozen=True, slots=True)
class OpcUaFigures:
    """The server's counts for the status: running; clients: TCP connections open now (one per
    OPC UA client); events taken from the outlet; queued: events in the inbox, not yet taken;
    result events sent; events dropped (the inbox full, or the server not running); failed:
    events, snapshots or variable writes that failed; status reads that failed."""

    running: bool
    clients: int
    events: int
    queued: int
    results_sent: int
    dropped: int
    failed: int
    status_failures: int
    endpoint: str


def identity_tokens(cfg: OpcUaConfig) -> list[type]:
    """The identity tokens the endpoint offers: user names only where there are users, so an
    anonymous-only endpoint (the demo's) never offers a password that security none would carry
    in plain text (asyncua warns of that at every start)."""
    tokens: list[type] = []
    if cfg.users:
        tokens.append(ua.UserNameIdentityToken)
    if cfg.anonymous:
        tokens.append(ua.AnonymousIdentityToken)
    return tokens


class OpcUaServer:
    """The OPC UA server of one cell, on its own thread and loop."""

    def __init__(
        self,
        config: OpcUaConfig,
        control: CellControl,
        cell_loop: asyncio.AbstractEventLoop | None = None,
        data_dir: Path = Path("."),
        env: Mapping[str, str] | None = None,
        poll_status: bool = True,
    ) -> None:
        """`control` is called on `cell_loop` (the loop that owns the cell: in process, the
        facade must be called there); None calls it on the server's own loop (a facade that
        may be called from any thread, or a test's stub). Relative paths in the config (the
        certificate, password files) are taken from `data_dir`; passwords in variables from
        `env` (default: the process environment). `poll_status` false: the status is not read
        from `control` but handed in with `on_snapshot` (the cell pushes it, in order with its
        events)."""
        self.config = config
        self._control, self._cell_loop = control, cell_loop
        self._data_dir, self._env = data_dir, env
        self._poll = poll_status
        self._inbox: deque[Event | StatusSnapshot] = deque()
        self._inbox_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: str | None = None
        self._server: Server | None = None
        self._running = False
        self.events = self.results_sent = self.dropped = self.failed = self.status_failures = 0
        self._failed_logged_at = float("-inf")
        # Touched on the server's loop only:
        self._view = CellView()
        self._ring = ResultRing(config.recent_results)
        self._nodes: dict[str, tuple[ua.NodeId, ua.VariantType]] = {}
        self._shown: dict[str, Any] = {}
        self._show_lock: asyncio.Lock | None = None
        self._result_gen: EventGenerator | None = None
        self._replay: list[Event] | None = None  # events taken while a snapshot was on its way

    # ------------------------------------------------------------------ life
    def start(self, timeout_s: float = 30.0) -> None:
        """Build the address space and listen; returns once clients can connect."""
        if self._thread is not None:
            raise RuntimeError("the OPC UA server was started already")
        passwords = self._passwords()
        self._thread = threading.Thread(target=self._run, args=(passwords,), name="opcua", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            self.stop()
            raise OpcUaStartError(f"opcua: the server did not start within {timeout_s:.0f} s")
        if self._start_error is not None:
            self._thread.join(5.0)
            raise OpcUaStartError(self._start_error)
        log.info("opcua: serving %s (security %s)", self.config.endpoint, self.config.security)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving: close the sessions and the socket, end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(self._request_stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("opcua: the server thread did not end within %.0f s", timeout_s)

    def _passwords(self) -> dict[str, str]:
        try:
            return read_passwords(self.config, self._data_dir, self._env)
        except SecretError as exc:
            raise OpcUaStartError(str(exc)) from None

    @property
    def port(self) -> int:
        """The port it listens on (0 before it started)."""
        srv = self._server
        return srv.bserver.port if srv is not None and srv.bserver is not None else 0

    def figures(self) -> OpcUaFigures:
        """Its counts now; any thread."""
        srv = self._server
        clients = len(srv.bserver.clients) if srv is not None and srv.bserver is not None else 0
        return OpcUaFigures(
            self._running, clients, self.events, len(self._inbox), self.results_sent, self.dropped,
            self.failed, self.status_failures, self.config.endpoint,
        )  # fmt: skip

    # ----------------------------------------------------------------- events
    def on_event(self, event: Event | StatusSnapshot) -> None:
        """The outlet's callback: queue the event for the server's loop. Never blocks."""
        loop, wake = self._loop, self._wake
        with self._inbox_lock:
            if (
                not self._running
                or loop is None
                or wake is None
                or len(self._inbox) >= self.config.queue_size
            ):
                self.dropped += 1
                return
            first = not self._inbox
            self._inbox.append(event)
        if first:  # one wake-up per batch: the loop's callback queue stays bounded too
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    def on_snapshot(self, snap: StatusSnapshot) -> None:
        """The cell's status, pushed (`poll_status` false): shown after the events queued before
        it, through the same bounded inbox. Never blocks."""
        self.on_event(snap)

    # ------------------------------------------------------------ the thread
    def _run(self, passwords: dict[str, str]) -> None:
        try:
            asyncio.run(self._main(passwords))
        except Exception as exc:  # never a traceback on the way out: say what failed
            if not self._started.is_set():
                known = isinstance(exc, OpcUaStartError)
                self._start_error = str(exc) if known else f"opcua: {type(exc).__name__}: {exc}"
            else:
                log.error("opcua: the server stopped: %s: %s", type(exc).__name__, exc)
        finally:
            self._running = False
            self._started.set()

    async def _main(self, passwords: dict[str, str]) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop, self._show_lock = asyncio.Event(), asyncio.Event(), asyncio.Lock()
        await self._check_port()
        server = await self._build(passwords)
        try:
            await server.start()
        except OSError as exc:
            raise OpcUaStartError(
                f"opcua: cannot listen on {self.config.endpoint}: {exc.strerror or exc}"
            ) from None
        self._server = server
        with self._inbox_lock:
            self._running = True
        self._started.set()
        poller = asyncio.create_task(
            self._poll_status() if self._poll else self._stop.wait(), name="opcua-status"
        )
        try:
            while not self._stop.is_set():
                await self._wake.wait()
                await self._drain()
        finally:
            with self._inbox_lock:
                self._running = False
                self._inbox.clear()
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await server.stop()
            log.info("opcua: stopped")

    def _request_stop(self) -> None:
        assert self._stop is not None and self._wake is not None
        self._stop.set()
        self._wake.set()

    async def _check_port(self) -> None:
        """Fail early and in one line when the endpoint cannot be bound (asyncua would log a
        traceback, after building the whole address space)."""
        try:
            probe = await asyncio.get_running_loop().create_server(
                asyncio.Protocol, self.config.host, self.config.port
            )
        except OSError as exc:
            raise OpcUaStartError(
                f"opcua: cannot listen on {self.config.endpoint}: {exc.strerror or exc}"
            ) from None
        probe.close()
        await probe.wait_closed()

    async def _drain(self) -> None:
        assert self._wake is not None
        self._wake.clear()
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
        for event in batch:
            if isinstance(event, StatusSnapshot):
                try:
                    self._view.apply_snapshot(event)
                except Exception as exc:  # a snapshot it cannot read: the next one may do
                    self._failed("status snapshot", exc)
                continue
            self.events += 1
            try:
                await self._take(event)
            except Exception as exc:  # one bad event must not stop the server
                self._failed(f"event {type(event).__name__}", exc)
        await self._show()

    def _failed(self, what: str, exc: Exception) -> None:
        """Count a failure; log one line a minute at most."""
        self.failed += 1
        now = time.monotonic()
        if now - self._failed_logged_at >= 60.0:
            self._failed_logged_at = now
            log.warning("opcua: %s failed (%d so far): %s: %s", what, self.failed, type(exc).__name__, exc)

    async def _take(self, event: Event) -> None:
        self._view.apply_event(event)
        if self._replay is not None and not isinstance(event, PartRecorded):
            self._replay.append(event)
        if isinstance(event, PartRecorded):
            fields = result_fields(event, self.config.simulated)
            self._ring.add(fields["ResultId"], fields["ResultContent"])
            await self._send_result(event, fields)
        elif isinstance(event, StateChanged):
            await self._show()  # a state change is shown before the results that follow it

    async def _send_result(self, event: PartRecorded, fields: dict[str, Any]) -> None:
        gen = self._result_gen
        assert gen is not None
        for name, vtype, _doc in RESULT_FIELDS:
            value = fields[name]
            setattr(gen.event, name, ua.Variant(value, ua.VariantType[vtype.removesuffix("[]")]))
        when = datetime.fromtimestamp(event.time, UTC) if event.time is not None else None
        message = f"part {event.part_id}: {event.verdict.name.lower()}"
        await gen.trigger(time_attr=when, message=message)
        self.results_sent += 1

    async def _poll_status(self) -> None:
        """Follow the cell's status snapshot; events taken meanwhile are applied again after it,
        so an older snapshot never undoes a newer event."""
        last_error = ""
        while True:
            self._replay = []
            try:
                snap = await self._on_cell(self._control.snapshot, self.config.call_timeout_s)
            except Exception as exc:
                self.status_failures += 1
                error = f"{type(exc).__name__}: {exc}"
                if error != last_error:
                    log.warning("opcua: cannot read the cell's status: %s", error)
                last_error = error
            else:
                last_error = ""
                try:
                    self._apply_snapshot(snap)
                except Exception as exc:  # a snapshot it cannot read must not end the polling
                    self._failed("status snapshot", exc)
                await self._show()
            self._replay = None
            await asyncio.sleep(self.config.status_interval_s)

    def _apply_snapshot(self, snap: StatusSnapshot) -> None:
        self._view.apply_snapshot(snap)
        for event in self._replay or ():
            self._view.apply_event(event)

    async def _show(self) -> None:
        """Write the variables whose values changed. One at a time: the values are taken under
        the lock, so the last writer shows the newest view, never an older one it overtook."""
        server, lock = self._server, self._show_lock
        assert server is not None and lock is not None
        async with lock:
            now = ua.DateTime.now(UTC)
            for name, value in self._view.values().items():
                if name in self._shown and self._shown[name] == value:
                    continue
                nodeid, vtype = self._nodes[name]
                shown = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now)
                try:
                    await server.write_attribute_value(nodeid, shown)
                except Exception as exc:  # shown again at the next change or snapshot
                    self._failed(f"variable {name}", exc)
                    continue
                self._shown[name] = value

    async def _on_cell(self, fn: Callable[[], T], timeout_s: float) -> T:
        """`fn()` run where the facade must be called (the cell's loop), awaited here."""

        async def call() -> T:
            return fn()

        return await self._await_on_cell(call, timeout_s)

    async def _await_on_cell(self, make: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        waited: asyncio.Future[T]
        if self._cell_loop is None:
            waited = asyncio.ensure_future(make())
        else:
            waited = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_wrap(make), self._cell_loop))
        # Not cancelled at the timeout: a recipe change under way finishes on the cell's loop.
        done, _ = await asyncio.wait({waited}, timeout=timeout_s)
        if not done:
            raise TimeoutError(f"the cell did not answer within {timeout_s:g} s")
        return waited.result()

    # --------------------------------------------------------------- methods
    async def _command(self, parent: ua.NodeId, command: ua.Variant) -> list[ua.Variant]:
        """PackTags.Command(Command: String) → (Accepted, Reason): a PackML command by name or
        number, sent as from "opcua" (the state change's cause). One the cell does not answer
        within `call_timeout_s` is reported not accepted, yet may still be applied later (it
        waits on the cell's loop, as a recipe change past `recipe_timeout_s` goes on)."""
        text = str(command.Value or "").strip()
        cmd = _parse_command(text)
        if cmd is None:
            names = ", ".join(c.name.lower() for c in Command if c is not Command.UNDEFINED)
            return _out((False, ua.VariantType.Boolean), (f"unknown command {text!r}: one of {names}", None))
        try:
            refused = await self._on_cell(
                lambda: self._control.command(cmd, SOURCE), self.config.call_timeout_s
            )
        except TimeoutError as exc:
            # Not cancelled: the command is queued on the cell's loop and may still be applied.
            reason = f"{exc}; the command may still be applied (read StateCurrent)"
            return _out((False, ua.VariantType.Boolean), (reason, None))
        except Exception as exc:
            return _out((False, ua.VariantType.Boolean), (f"the cell did not answer: {exc}", None))
        log.info("opcua: command %s %s", cmd.name.lower(), "refused: " + refused if refused else "accepted")
        return _out((refused is None, ua.VariantType.Boolean), (refused or "", None))

    async def _select_recipe(
        self, parent: ua.NodeId, name: ua.Variant, number: ua.Variant
    ) -> list[ua.Variant]:
        """RecipeManagement.SelectRecipe(Name, Number) → (Result, ResultCode, Reason), through the
        cell's changeover path: the same checks and refusals as the CLI and the PLC."""
        recipe = str(name.Value or "").strip() or None
        num = int(number.Value or 0) or None
        if recipe is None and num is None:
            result, reason = RecipeResult.INVALID, "give a recipe name or a number (not 0)"
        else:
            try:
                result, reason = await self._await_on_cell(
                    lambda: self._control.activate_recipe(SOURCE, name=recipe, number=num),
                    self.config.recipe_timeout_s,
                )
            except TimeoutError as exc:
                result, reason = RecipeResult.NONE, f"{exc}; the change may still complete"
            except Exception as exc:
                result, reason = RecipeResult.NONE, f"the cell did not answer: {exc}"
        log.info("opcua: recipe %s: %s %s", recipe or num, result.name.lower(), reason)
        return _out(
            (result.name.lower(), ua.VariantType.String), (int(result), ua.VariantType.Int32), (reason, None)
        )

    async def _get_result(self, parent: ua.NodeId, rid: ua.Variant) -> list[ua.Variant]:
        """ResultManagement.GetResultById(ResultId) → (Found, ResultContent) among the recent results."""
        content = self._ring.get(str(rid.Value or ""))
        return _out((content is not None, ua.VariantType.Boolean), (content or "", None))

    # --------------------------------------------------------- address space
    async def _build(self, passwords: dict[str, str]) -> Server:
        cfg = self.config
        roles = {u.name: u.role for u in cfg.users}
        rules = RoleRules(roles, "viewer" if cfg.anonymous else None)
        server = Server(user_manager=CellUsers(passwords, cfg.anonymous))
        server.name, server.manufacturer_name = "Inspection cell", "inspection-cell-controller"
        server.product_uri = "urn:inspection-cell-controller"
        await server.init()
        server.set_endpoint(cfg.endpoint)
        await server.set_application_uri(cfg.application_uri)
        server.iserver.max_connections = cfg.max_clients
        server.set_identity_tokens(identity_tokens(cfg))
        if cfg.security == "none":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=rules)
        else:
            cert, key = self._data_dir / cfg.certificate, self._data_dir / cfg.private_key
            await ensure_certificate(cert, key, cfg.application_uri)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy(
                [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], permission_ruleset=rules
            )
            if cfg.trusted_clients is not None:
                server.set_certificate_validator(await client_validator(self._data_dir / cfg.trusted_clients))
        ns = await server.register_namespace(cfg.namespace_uri)
        await self._build_nodes(server, ns, rules)
        return server

    async def _build_nodes(self, server: Server, ns: int, rules: RoleRules) -> None:
        def nid(path: str) -> ua.NodeId:
            return _sid(f"InspectionCell.{path.replace('/', '.')}" if path else "InspectionCell", ns)

        system_type = await server.nodes.base_object_type.add_object_type(
            _sid("VisionSystemType", ns), ua.QualifiedName("VisionSystemType", ns)
        )
        cell = await server.nodes.objects.add_object(
            nid(""), ua.QualifiedName("InspectionCell", ns), objecttype=system_type.nodeid
        )
        objects: dict[str, Node] = {"": cell}
        paths = ("VisionStateMachine", "PackTags", "PackTags/Status", "PackTags/Admin", "RecipeManagement",
                 "ResultManagement")  # fmt: skip
        for path in paths:
            parent, _, leaf = path.rpartition("/")
            objects[path] = await objects[parent].add_object(nid(path), ua.QualifiedName(leaf, ns))
        values = self._view.values()
        for var in VARIABLES:
            path = f"{_FOLDERS[var.folder]}/{var.name}"
            vtype = ua.VariantType[var.type.removesuffix("[]")]
            node = await objects[_FOLDERS[var.folder]].add_variable(
                nid(path), ua.QualifiedName(var.name, ns), ua.Variant(values[var.name], vtype)
            )
            await node.write_attribute(
                AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(var.doc)))
            )
            self._nodes[var.name] = (node.nodeid, vtype)
            self._shown[var.name] = values[var.name]

        command = await objects["PackTags"].add_method(
            nid("PackTags/Command"), ua.QualifiedName("Command", ns), self._command,
            [_arg("Command", "String", "a PackML command by name or number: reset, start, stop, hold, ...")],
            [_arg("Accepted", "Boolean", "the cell took it"),
             _arg("Reason", "String", "why not, when refused")],
        )  # fmt: skip
        select = await objects["RecipeManagement"].add_method(
            nid("RecipeManagement/SelectRecipe"), ua.QualifiedName("SelectRecipe", ns), self._select_recipe,
            [_arg("Name", "String", "recipe name or file name ('' to select by number)"),
             _arg("Number", "Int32", "recipe number (0 to select by name)")],
            [_arg("Result", "String", "active, invalid, unknown_number, busy, model_failed, not_safe, "
                  "unknown_recipe, none"),
             _arg("ResultCode", "Int32", "the result's wire value (1 active)"),
             _arg("Reason", "String", "from which part it judges, or why not (one problem a line)")],
        )  # fmt: skip
        await objects["ResultManagement"].add_method(
            nid("ResultManagement/GetResultById"), ua.QualifiedName("GetResultById", ns), self._get_result,
            [_arg("ResultId", "String", "'<run>:<part id>', as in result events")],
            [_arg("Found", "Boolean", "the result is among the recent ones"),
             _arg("ResultContent", "String", "the result as JSON ('' when not found)")],
        )  # fmt: skip
        rules.require(command.nodeid, "operator")
        rules.require(select.nodeid, "engineer")

        # By namespace index, not NodeId: asyncua would give every field the type's NodeId.
        result_type = await server.create_custom_event_type(
            ns, "ResultReadyEventType",
            ObjectIds.BaseEventType,
            [(name, ua.VariantType[vtype.removesuffix("[]")]) for name, vtype, _doc in RESULT_FIELDS],
        )  # fmt: skip
        self._result_gen = await server.get_event_generator(result_type, cell.nodeid)
        self._result_gen.event.Severity = 100


async def _wrap(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def _sid(text: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(text), ua.Int16(ns))


def _parse_command(text: str) -> Command | None:
    try:
        cmd = Command(int(text)) if text.isdigit() else Command[text.upper()]
    except (KeyError, ValueError):
        return None
    return None if cmd is Command.UNDEFINED else cmd


def _arg(name: str, vtype: str, doc: str) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = ua.NodeId(ua.Int32(ua.VariantType[vtype].value))
    arg.ValueRank = -1
    arg.Description = ua.LocalizedText(doc)
    return arg


def _out(*values: tuple[Any, ua.VariantType | None]) -> list[ua.Variant]:
    return [ua.Variant(v, t if t is not None else ua.VariantType.String) for v, t in values]


def read_passwords(
    config: OpcUaConfig, data_dir: Path, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Every user's password (`SecretError` names the one that cannot be read)."""
    return {u.name: read_password(u, data_dir, env) for u in config.users}


__all__ = ["SOURCE", "OpcUaFigures", "OpcUaServer", "OpcUaStartError", "read_passwords"]
