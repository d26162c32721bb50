"""The console rendered into a fixed-size recording terminal, and its keys."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from controller.api import ApiClient
from controller.console import KEYS, render_status
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


def render(s: StatusSnapshot, size: tuple[int, int] = (120, 40), footer: str = "") -> str:
    console = Console(width=size[0], height=size[1], record=True, color_system=None, force_terminal=True)
    console.print(render_status(s, size, footer))
    return console.export_text()


def test_key_figures_are_on_screen() -> None:
    text = render(snapshot(), footer=KEYS)
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
    text = render(snapshot(alarms={30: "camera gone: left"}), size=(70, 20))
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
