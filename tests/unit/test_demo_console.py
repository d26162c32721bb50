"""The demo's console (issue 15, item 4): `cellctl console`'s session with q stopping the demo,
its options handed to the control process, and the screen it draws on."""

from __future__ import annotations

import io
import os
import signal
import socket
from pathlib import Path
from unittest import mock

import pytest
from rich.console import Console

from controller.api import ApiError
from controller.contract import Command
from controller.demo import KEY_STOP, DemoOptions, plant_ports, watch_lines
from controller.demo_console import OPTIONS, DemoSession, _Child, _DemoClient, give_way
from controller.snapshot import StatusSnapshot
from controller.terminal import show
from tests.unit.test_console import snapshot


class FakeCell:
    """The control facade of a cell that accepts every command."""

    def __init__(self) -> None:
        self.sent: list[Command] = []

    def command(self, cmd: Command, source: str = "api") -> str | None:
        assert source == "console"
        self.sent.append(cmd)
        return None

    def snapshot(self) -> StatusSnapshot:
        return snapshot(state="HELD" if self.sent and self.sent[-1] is Command.HOLD else "EXECUTE")

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> object:
        raise NotImplementedError


def session() -> tuple[DemoSession, FakeCell, list[int]]:
    cell, stops = FakeCell(), []
    return DemoSession(cell, stops.append), cell, stops  # type: ignore[arg-type]


def test_the_console_keys_command_the_demo_cell_and_stop_asks_first() -> None:
    s, cell, _ = session()
    assert s.key("h") and cell.sent == [Command.HOLD] and "HELD" in s.footer()
    assert s.key("x") and "press y to STOP" in s.footer() and cell.sent == [Command.HOLD]
    assert s.key("n") and s.footer() == "stop cancelled"
    assert s.key("x") and s.key("y") and cell.sent == [Command.HOLD, Command.STOP]


def test_q_stops_the_demo_and_keeps_the_console_until_it_has_scored() -> None:
    s, cell, stops = session()
    s.key("x")
    assert s.key("q") is True  # the console stays: the demo drains, then it ends
    assert stops == [KEY_STOP] and s.pending is None and cell.sent == []
    s.key("Q")
    assert stops == [KEY_STOP, KEY_STOP]  # again: at once


def test_the_control_process_gets_the_same_options() -> None:
    opts = DemoOptions(
        parts=300,
        cell=Path("/x/cell.yaml"),
        socket=Path("/run/s.sock"),
        faults=("plc:restart@10",),
        verbose=1,
        mqtt=1884,
        opcua=4841,
    )
    assert OPTIONS.validate_json(OPTIONS.dump_json(opts)) == opts


def test_the_console_says_how_to_watch_the_plant_connections() -> None:
    cell = FakeCell()
    s = DemoSession(cell, lambda sig: None, watch_lines(1884, 4840))  # type: ignore[arg-type]
    assert s.footer() == (
        "MQTT: mosquitto_sub -h 127.0.0.1 -p 1884 -v -t 'inspection/v1/#' │ "
        "OPC UA: opc.tcp://127.0.0.1:4840/inspection-cell/ (anonymous viewer)"
    )
    assert s.key("h") and s.footer() == "hold: accepted, HELD"  # a key's answer replaces it
    assert DemoSession(cell, lambda sig: None).footer() == ""  # type: ignore[arg-type]


def test_plant_ports_are_chosen_once_opcua_4840_unless_taken() -> None:
    assert plant_ports(DemoOptions()) == DemoOptions()  # neither asked for
    given = plant_ports(DemoOptions(mqtt=1884, opcua=4841))
    assert (given.mqtt, given.opcua) == (1884, 4841)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with mock.patch("controller.demo.OPCUA_PORT", port):
            chosen = plant_ports(DemoOptions(mqtt=0, opcua=0))
    assert chosen.mqtt and chosen.opcua and chosen.opcua != port and chosen.mqtt != port
    with mock.patch("controller.demo.OPCUA_PORT", port):  # free again
        assert plant_ports(DemoOptions(opcua=0)).opcua == port


def test_until_the_demo_answers_it_says_it_is_starting(tmp_path: Path) -> None:
    client = _DemoClient(tmp_path / "nothing.sock", status_timeout=0.2)
    with pytest.raises(ApiError, match="the demo is starting"):
        client.snapshot()
    client.stopping = True
    with pytest.raises(ApiError, match="scoring"):
        client.snapshot()


def test_while_the_demo_starts_the_screen_says_so_not_that_the_service_is_away(tmp_path: Path) -> None:
    session = DemoSession(_DemoClient(tmp_path / "nothing.sock", status_timeout=0.2), lambda sig: None)
    console = Console(file=io.StringIO(), width=100, height=30, color_system=None)
    console.print(session.frame((100, 30)))
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert "starting" in screen and "not reachable" not in screen and "reconnecting" not in screen


def test_signals_before_the_child_runs_wait_for_it_and_a_hang_up_ends_the_drawing() -> None:
    child = _Child(DemoOptions())
    child.forward(signal.SIGINT)
    assert child.pending == [signal.SIGINT]
    child.forward(signal.SIGHUP)
    assert child.ended()


def test_the_screen_is_the_alternate_one_and_is_left_when_the_demo_ends() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, height=24, force_terminal=True, color_system=None)
    s, _, _ = session()
    frames = iter([False, False, True])
    assert show(s, console, refresh_hz=100.0, ended=lambda: next(frames)) == 0
    text = out.getvalue()
    assert text.count("inspection cell") == 3 and "h hold" in text  # two frames, then the last screen
    assert text.index("\x1b[?1049h") < text.index("inspection cell") < text.rindex("\x1b[?1049l")


def _drawn(s: DemoSession) -> str:
    console = Console(
        file=io.StringIO(), width=100, height=30, record=True, color_system=None, force_terminal=True
    )
    console.print(s.frame((100, 30)))
    return console.export_text()


@pytest.mark.parametrize("stopped", [False, True], ids=["parts done", "q"])
def test_once_the_run_has_ended_the_console_says_it_is_scoring_not_unreachable(
    tmp_path: Path, stopped: bool
) -> None:
    # The demo closes its control socket when the run ends, then scores (and closes its plant
    # links): the console keeps the last figures and says so, instead of "service not reachable".
    sock = tmp_path / "cell.sock"
    sock.touch()
    client = _DemoClient(sock, status_timeout=0.2)
    s = DemoSession(client, lambda sig: None)
    answers: list[object] = [snapshot(state="EXECUTE", parts=2999)]
    gone = ApiError(f"cell service at {sock} is not running (stale socket)")

    def reply(self: object) -> StatusSnapshot:
        answer = answers.pop(0) if answers else gone
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    with mock.patch("controller.api.ApiClient.snapshot", reply):
        assert "EXECUTE" in _drawn(s)
        answers.append(snapshot(state="STOPPED", parts=3000))
        assert "STOPPED" in _drawn(s)
        client.stopping = stopped
        sock.unlink()  # the run ended: the demo stopped its control API
        text = _drawn(s)
    assert "not reachable" not in text and "reconnecting" not in text, text
    assert "the run ended" in text and "scoring" in text and "STOPPED" in text and "3000" in text, text


def test_a_status_that_times_out_mid_run_is_still_shown_as_such(tmp_path: Path) -> None:
    sock = tmp_path / "cell.sock"
    sock.touch()  # still there: the cell is busy, not finished
    client = _DemoClient(sock, status_timeout=0.2)
    s = DemoSession(client, lambda sig: None)
    answers: list[object] = [snapshot(), ApiError(f"cell service at {sock} did not answer within 0.2 s")]

    def reply(self: object) -> StatusSnapshot:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    with mock.patch("controller.api.ApiClient.snapshot", reply):
        _drawn(s)
        text = _drawn(s)
    assert "not reachable" in text and "the run ended" not in text, text


def test_the_console_gives_every_core_it_uses_away_to_the_cell() -> None:
    # Measured (tests/benchmarks/test_console_cost.py): at nice 10 drawing still raised the
    # cell's p99 by ~4 ms on 2 cores; as an idle-class thread it costs what polling does.
    import threading

    seen: list[int] = []

    def body() -> None:
        give_way()
        seen.append(os.sched_getscheduler(0))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [os.SCHED_IDLE]
