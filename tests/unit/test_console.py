"""The console rendered into a fixed-size recording terminal, and its keys."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from rich.console import Console

from controller.api import ApiClient
from controller.console import KEYS, render_status, render_unreachable
from controller.contract import Command
from controller.service import StatusSnapshot, snapshot_from_dict
from controller.terminal import ConsoleSession


def snapshot(**kw: object) -> StatusSnapshot:
    base: dict[str, object] = dict(
        state="EXECUTE", recipe="plate-4h", recipe_hash="abcdef123456", provider="CPUExecutionProvider",
        parts=1234, passed=1000, failed=200, no_decision=34, in_flight=7, parts_per_min=1198.0,
        latency_p50_ms=5.2, latency_p99_ms=13.9, rejects_by_reason={"scratch": 120, "missing_frame": 34},
        cameras={
            "top": {"frames": 1230, "missed": 3, "skipped": 2, "underruns": 0, "connected": 1},
            "left": {"frames": 1100, "missed": 0, "skipped": 0, "underruns": 0, "connected": 0},
        },
        link_up=True, heartbeat_age_s=0.003,
        alarms={}, recent=[(1234, "FAIL", "top:scratch"), (1233, "PASS", "")],
        line_speed_mm_s=998.0, rejects_by_camera={"top": 150},
        stage_ms={"infer": (1.4, 3.3), "total": (5.2, 13.9)}, camera_fps={"top": 20.0, "left": 0.0},
    )  # fmt: skip
    base.update(kw)
    return StatusSnapshot(**base)  # type: ignore[arg-type]


def render(s: StatusSnapshot, size: tuple[int, int] = (120, 40), footer: str = "", keys: str = "") -> str:
    console = Console(width=size[0], height=size[1], record=True, color_system=None, force_terminal=True)
    console.print(render_status(s, size, footer, keys))
    return console.export_text()


def test_key_figures_are_on_screen() -> None:
    text = render(snapshot(), keys=KEYS)
    needles = ["EXECUTE", "plate-4h", "abcdef123456", "1234", "1198", "998", "13.9", "3.3"]
    needles += ["scratch", "missing_frame", "81.0 %", "top:scratch", "CPU", "no active alarms", "hb 3 ms"]
    needles += ["infer", "total", "left GONE", "150", "x stop"]
    for needle in needles:
        assert needle in text, needle
    assert len(text.splitlines()) <= 40


def test_link_down_and_alarms_are_shown() -> None:
    text = render(snapshot(link_up=False, alarms={10: "PLC heartbeat stopped changing"}, state="HELD"))
    assert "DOWN" in text and "PLC heartbeat stopped changing" in text and "HELD" in text


def test_small_terminal_shows_the_essentials_and_says_so() -> None:
    # Too few rows for the stage table (issue 15 item 10: at 70x20 it now fits and is kept).
    text = render(snapshot(alarms={30: "camera gone: left"}), size=(70, 14))
    assert "EXECUTE" in text and "camera gone: left" in text and "1198" in text
    assert "small terminal: full view needs 100x30" in text
    assert "p50 ms" not in text  # the stage table is left out


def test_snapshot_survives_the_api_round_trip() -> None:
    s = snapshot(alarms={13: "PLC link lost"}, heartbeat_age_s=float("inf"))
    back = snapshot_from_dict(json.loads(json.dumps(asdict(s))))
    assert back == s


def test_stop_and_abort_ask_first_and_a_dead_service_is_reported(tmp_path: Path) -> None:
    session = ConsoleSession(ApiClient(tmp_path / "nothing.sock"))
    assert session.key("x") and "press y to STOP" in session.footer()
    assert session.key("n") and session.footer() == "stop cancelled"
    assert session.key("a") and "ABORT" in session.footer()
    session.key("y")  # confirmed: sent, and the missing service is the answer
    assert "abort: no cell service at" in session.footer()
    assert not session.key("q")
    console = Console(width=100, height=30, record=True, color_system=None, force_terminal=True)
    console.print(session.frame((100, 30)))  # type: ignore[arg-type]
    text = console.export_text()
    assert "service not reachable" in text and "reconnecting" in text


# ------------------------------------------------------------------ issue 15, item 10
def test_reasons_are_cut_at_a_word_with_an_ellipsis() -> None:
    why = "top:scratch,left:missing_frame,right:dent"
    text = render(snapshot(recent=[(7, "FAIL", why)]))
    row = next(ln for ln in text.splitlines() if "FAIL" in ln)
    assert "top:scratch,…" in row, row  # the next reason does not fit whole
    assert "missing_fr" not in row, row


def test_a_short_reason_is_not_cut() -> None:
    text = render(snapshot(recent=[(7, "FAIL", "top:scratch")]))
    row = next(ln for ln in text.splitlines() if "FAIL" in ln)
    assert "top:scratch" in row and "…" not in row, row


def test_at_80x24_the_stage_and_camera_tables_and_the_legend_fit() -> None:
    text = render(snapshot(), size=(80, 24), footer="stop cancelled", keys=KEYS)
    lines = text.splitlines()
    assert len(lines) <= 24, text
    assert "p50 ms" in text and "journal" in text and "total" in text, text  # the stage table
    assert "left GONE" in text and "missed" in text, text  # the camera table
    assert "stop cancelled" in text and KEYS in text, text
    assert "reject reason" in text, text  # the rest fits too, without blank lines: nothing left out
    assert "small terminal" not in text, text
    assert max(len(ln) for ln in lines) <= 80


@pytest.mark.parametrize("size", [(80, 24), (60, 15), (100, 30), (50, 14)])
def test_the_legend_stays_visible_with_many_alarms_and_cameras(size: tuple[int, int]) -> None:
    cams = {f"cam{k}": {"frames": 10, "missed": 0, "skipped": 0, "underruns": 0} for k in range(12)}
    alarms = {code: f"alarm text number {code}" for code in range(10, 22)}
    text = render(snapshot(cameras=cams, alarms=alarms, state="HELD"), size=size, keys=KEYS)
    lines = text.splitlines()
    assert len(lines) <= size[1], text
    assert "q quit" in text, text  # the legend's end: not cut by the bottom of the screen
    assert "HELD" in text and "alarm 10: alarm text number 10" in text, text


@pytest.mark.parametrize("size", [(40, 10), (30, 8), (44, 12), (60, 10), (36, 14)])
def test_a_tiny_terminal_keeps_the_state_and_the_legend_and_cuts_no_label(size: tuple[int, int]) -> None:
    alarms = {13: "PLC link lost", 30: "camera gone: left"}
    text = render(snapshot(state="HELD", alarms=alarms), size=size, keys=KEYS)
    lines = text.splitlines()
    assert len(lines) <= size[1] and max(len(ln) for ln in lines) <= size[0], text
    assert "HELD" in text and "q quit" in text, text
    assert lines[-2].rstrip("│ ").endswith("q quit"), text  # the legend is the last line inside
    for cut_label in ("par…", "pas…", "rej…", "yie…", "lat…", "dec…"):
        assert cut_label not in text, text


def test_the_unreachable_screen_keeps_the_legend() -> None:
    console = Console(width=80, height=24, record=True, color_system=None, force_terminal=True)
    console.print(render_unreachable("no cell service at /x", "", KEYS))
    assert "q quit" in console.export_text()


def test_the_console_counts_add_up() -> None:
    text = render(snapshot(parts=1240, in_flight=40))  # 1240 = 1000 + 234 + 6 without a verdict
    row = next(ln for ln in text.splitlines() if "in flight" in ln)
    assert row.split("in flight")[1].split()[0] == "6", row


def test_alarms_that_wrap_are_counted_when_they_do_not_fit() -> None:
    long = "a long alarm text that wraps onto a second line of a narrow terminal " * 2
    alarms = {code: f"{long}{code}" for code in range(10, 16)}
    for rows in range(14, 30):
        text = render(snapshot(alarms=alarms), size=(60, rows), keys=KEYS)
        assert len(text.splitlines()) <= rows and "q quit" in text, (rows, text)


PLANT = {
    "mqtt": {"connected": False, "sent": 40, "queued": 2, "dropped": 1},
    "opcua": {"connected": True, "sent": 42, "queued": 0, "dropped": 0, "clients": 2},
}


def test_the_plant_connections_are_one_compact_line_when_enabled() -> None:
    from controller.console import plant_line

    assert plant_line(snapshot()) is None and "MQTT" not in render(snapshot())
    line = plant_line(snapshot(plant=PLANT))
    assert line == "MQTT DOWN 40 sent 2 queued 1 dropped │ OPC UA up 2 clients 42 sent 0 dropped", line
    only = plant_line(snapshot(plant={"opcua": PLANT["opcua"]}))
    assert only is not None and "MQTT" not in only and "OPC UA up 2 clients" in only
    text = render(snapshot(plant=PLANT), size=(80, 24), keys=KEYS)
    assert [ln for ln in text.splitlines() if "MQTT DOWN 40 sent" in ln and "OPC UA up 2 clients" in ln]
    assert len(text.splitlines()) <= 24 and "q quit" in text
    assert snapshot_from_dict(json.loads(json.dumps(asdict(snapshot(plant=PLANT))))).plant == PLANT
    from controller.console import status_lines

    assert "plant: MQTT DOWN 40 sent" in "\n".join(status_lines(snapshot(plant=PLANT)))
    assert not any(ln.startswith("plant") for ln in status_lines(snapshot()))


def test_a_console_command_says_it_came_from_the_console() -> None:
    sent: list[tuple[Command, str]] = []

    class Cell:
        def command(self, cmd: Command, source: str = "api") -> str | None:
            sent.append((cmd, source))
            return None

        def snapshot(self) -> StatusSnapshot:
            return snapshot(state="HELD")

    session = ConsoleSession(Cell())  # type: ignore[arg-type]
    assert session.key("h") and session.footer() == "hold: accepted, HELD"
    assert sent == [(Command.HOLD, "console")]
