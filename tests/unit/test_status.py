"""Issue 15, item 9: `cellctl status` against the real local API (a stand-in cell behind it):
alarm texts, totals that add up, exit codes for scripts and a `--watch` mode."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.api import ApiLimits, ControlApi
from controller.cli import main
from controller.service import StatusSnapshot

BASE = StatusSnapshot(
    state="EXECUTE", recipe="plate-4h", recipe_hash="abcdef123456", provider="CPUExecutionProvider",
    parts=1234, passed=1000, failed=200, no_decision=30, in_flight=9, parts_per_min=1198.0,
    latency_p50_ms=5.2, latency_p99_ms=13.9,
    rejects_by_reason={"defect": 200, "missing_frame": 20, "not_inspecting": 10},
    cameras={}, link_up=True, heartbeat_age_s=0.003, alarms={}, recent=[],
)  # fmt: skip


class Cell:
    """What the API asks of a cell: its snapshot, which a test replaces."""

    def __init__(self) -> None:
        self.snap = BASE
        self.core = SimpleNamespace(state=SimpleNamespace(name="EXECUTE"))

    def snapshot(self) -> StatusSnapshot:
        return self.snap


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[tuple[Cell, Path]]:
    """The real ControlApi on a socket in tmp_path, served from a thread as the service does."""
    stub, sock = Cell(), tmp_path / "api" / "cell.sock"
    loop = asyncio.new_event_loop()
    api = ControlApi(stub, sock, ApiLimits(status_max_age_s=0.0))  # type: ignore[arg-type]
    loop.run_until_complete(api.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield stub, sock
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        loop.close()


def status(sock: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str]:
    rc = main(["status", "--socket", str(sock), *more])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.out


def test_totals_add_up_and_rejects_are_split_by_cause(
    cell: tuple[Cell, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = status(cell[1], capsys)
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("EXECUTE  recipe plate-4h (abcdef123456)  PLC up"), lines
    assert "parts 1234: 1000 passed, 230 rejected, 4 in flight" in lines, lines  # 1234 = 1000 + 230 + 4
    assert "rejected 230: 200 defect, 30 no decision (20 missing frame, 10 not inspecting)" in lines, lines
    assert "no active alarms" in lines
    assert "failed" not in out


def test_held_by_an_alarm_lists_the_texts_and_exits_3(
    cell: tuple[Cell, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    stub, sock = cell
    stub.snap = dataclasses.replace(
        BASE,
        state="HELD",
        alarms={10: "PLC heartbeat stopped changing", 30: "camera gone: left"},
        no_decision=60,
        parts=1264,
        rejects_by_reason={"defect": 200, "missing_frame": 20, "not_inspecting": 40},
    )
    rc, out = status(sock, capsys)
    assert rc == 3, out
    assert "alarm 10: PLC heartbeat stopped changing" in out and "alarm 30: camera gone: left" in out
    assert "rejected 260: 200 defect, 60 no decision (40 not inspecting, 20 missing frame)" in out, out
    assert out.splitlines()[-1] == "needs attention: held by alarm 10, 30", out


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"state": "ABORTED"}, "aborted"),
        ({"state": "ABORTING"}, "aborted"),
        ({"link_up": False, "heartbeat_age_s": float("inf")}, "PLC link down"),
    ],
)
def test_aborted_or_plc_down_exits_3(
    cell: tuple[Cell, Path], capsys: pytest.CaptureFixture[str], change: dict[str, Any], why: str
) -> None:
    stub, sock = cell
    stub.snap = dataclasses.replace(BASE, **change)
    rc, out = status(sock, capsys)
    assert rc == 3 and out.splitlines()[-1] == f"needs attention: {why}", out
    rc, js = status(sock, capsys, "--json")
    assert rc == 3 and json.loads(js)["state"] == stub.snap.state


@pytest.mark.parametrize("state", ["HELD", "STOPPED", "IDLE", "SUSPENDED"])
def test_held_by_the_operator_or_stopped_is_not_a_failure(
    cell: tuple[Cell, Path], capsys: pytest.CaptureFixture[str], state: str
) -> None:
    stub, sock = cell
    stub.snap = dataclasses.replace(BASE, state=state)
    rc, out = status(sock, capsys)
    assert rc == 0 and "needs attention" not in out, out


def test_no_service_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["status", "--socket", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no cell service at" in err[0], err


def test_watch_refreshes_until_ctrl_c_without_a_traceback(
    cell: tuple[Cell, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    stub, sock = cell
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        stub.snap = dataclasses.replace(BASE, parts=BASE.parts + 10 * len(naps))
        if len(naps) % 3 == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", nap)
    rc, out = status(sock, capsys, "--watch", "0.5")
    assert rc == 0 and naps == [0.5, 0.5, 0.5], (rc, naps)
    for parts in (1234, 1244, 1254):
        assert f"parts {parts}:" in out, out
    rc, out = status(sock, capsys, "--watch", "0.5", "--json")  # one object per line
    assert rc == 0 and [json.loads(ln)["parts"] for ln in out.splitlines()] == [1264, 1274, 1284]


def test_watch_keeps_trying_while_the_service_is_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) >= 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", nap)
    rc = main(["status", "--socket", str(tmp_path / "none.sock"), "--watch"])
    out = capsys.readouterr()
    assert rc == 0 and len(naps) == 2 and out.err.count("no cell service at") == 2, out
    assert "Traceback" not in out.err


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_watch_refuses_a_bad_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["status", "--watch", bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--watch: expected" in err[0], err


def test_the_readme_example_is_what_status_prints() -> None:
    from controller.console import status_lines

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("`cellctl status` prints", 1)[1].split("```\n", 2)[1].splitlines()
    snap = dataclasses.replace(
        BASE,
        state="HELD",
        recipe_hash="3f2a9c01b7d4",
        heartbeat_age_s=0.002,
        parts_per_min=0.0,
        latency_p99_ms=13.1,
        parts=1264,
        no_decision=60,
        rejects_by_reason={"defect": 200, "missing_frame": 20, "not_inspecting": 40},
        alarms={30: "camera gone: left"},
    )
    assert status_lines(snap) == example


def test_ctrl_c_while_waiting_for_the_service_is_no_traceback(
    cell: tuple[Cell, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import controller.api as api

    def interrupted(*args: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "request", interrupted)
    assert main(["status", "--socket", str(cell[1])]) == 130
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
