"""The console rendered into a fixed-size recording terminal."""

from __future__ import annotations

from rich.console import Console

from controller.console import render_status
from controller.service import StatusSnapshot


def snapshot(**kw: object) -> StatusSnapshot:
    base: dict[str, object] = dict(
        state="EXECUTE", recipe="plate-4h", recipe_hash="abcdef123456", provider="CPUExecutionProvider",
        parts=1234, passed=1000, failed=200, no_decision=34, in_flight=7, parts_per_min=1198.0,
        latency_p50_ms=5.2, latency_p99_ms=13.9, rejects_by_reason={"scratch": 120, "missing_frame": 34},
        cameras={"top": {"frames": 1230, "skipped": 2, "underruns": 0}}, link_up=True, heartbeat_age_s=0.003,
        alarms={}, recent=[(1234, "FAIL", "top:scratch"), (1233, "PASS", "")],
    )  # fmt: skip
    base.update(kw)
    return StatusSnapshot(**base)  # type: ignore[arg-type]


def render(s: StatusSnapshot, width: int = 120) -> str:
    console = Console(width=width, height=30, record=True, color_system=None, force_terminal=True)
    console.print(render_status(s))
    return console.export_text()


def test_key_figures_are_on_screen() -> None:
    text = render(snapshot())
    needles = ["EXECUTE", "plate-4h", "abcdef123456", "1234", "1198", "5.2 ms", "13.9 ms"]
    needles += ["scratch", "missing_frame", "81.0 %", "top:scratch", "CPU", "no active alarms"]
    for needle in needles:
        assert needle in text, needle


def test_link_down_and_alarms_are_shown() -> None:
    text = render(snapshot(link_up=False, alarms={10: "PLC heartbeat stopped changing"}, state="HELD"))
    assert "DOWN" in text and "PLC heartbeat stopped changing" in text and "HELD" in text


def test_narrow_terminal_still_renders_state() -> None:
    assert "EXECUTE" in render(snapshot(), width=60)
