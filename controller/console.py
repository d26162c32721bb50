"""The operator's console: pure render functions from an immutable `StatusSnapshot` to rich renderables.

The same screen serves `cellctl demo` (in process) and `cellctl console` (attached to a running
service through the local API). Below `FULL_SIZE` it shows the essentials and says so.
"""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from controller.snapshot import STAGES, StatusSnapshot

_STATE_STYLE = {"EXECUTE": "bold green", "HELD": "bold yellow", "ABORTED": "bold red", "STOPPED": "bold"}
#: Columns and rows the full view needs.
FULL_SIZE = (100, 30)
#: The console's command keys (state commands of the local API).
COMMAND_KEYS = {
    "s": "start",
    "h": "hold",
    "u": "unhold",
    "r": "reset",
    "c": "clear",
    "x": "stop",
    "a": "abort",
}
KEYS = "  ".join(f"{k} {cmd}" for k, cmd in COMMAND_KEYS.items()) + "  q quit"


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1f}"


def _header(s: StatusSnapshot) -> Text:
    hb = f" hb {s.heartbeat_age_s * 1e3:.0f} ms" if math.isfinite(s.heartbeat_age_s) else " hb -"
    return Text.assemble(
        ("state ", "dim"), (s.state, _STATE_STYLE.get(s.state, "bold cyan")),
        ("   recipe ", "dim"), (f"{s.recipe} ({s.recipe_hash})", "bold"),
        ("   inference ", "dim"), (s.provider.replace("ExecutionProvider", ""), "bold"),
        ("   PLC ", "dim"),
        ("up" if s.link_up else "DOWN", "green" if s.link_up else "bold red"), (hb, "dim"),
    )  # fmt: skip


def _counts(s: StatusSnapshot) -> Table:
    rejected = s.failed + s.no_decision
    decided = s.passed + rejected
    yield_ = f"{100.0 * s.passed / decided:.1f} %" if decided else "-"
    t = Table.grid(padding=(0, 2))
    for _ in range(6):
        t.add_column(justify="right")
    t.add_row("parts", str(s.parts), "passed", str(s.passed), "rejected", str(rejected))
    t.add_row("parts/min", f"{s.parts_per_min:.0f}", "yield", yield_, "in flight", str(s.in_flight))
    t.add_row(
        "line mm/s", f"{s.line_speed_mm_s:.0f}", "no decision", str(s.no_decision),
        "latency p99", f"{_ms(s.latency_p99_ms)} ms",
    )  # fmt: skip
    return t


def _alarms(s: StatusSnapshot) -> RenderableType:
    if not s.alarms:
        return Text("no active alarms", style="dim")
    return Text("\n".join(f"alarm {c}: {t}" for c, t in sorted(s.alarms.items())), style="bold red")


def render_status(s: StatusSnapshot, size: tuple[int, int] | None = None, footer: str = "") -> RenderableType:
    """The whole console screen for one snapshot; `size` (columns, rows) picks full or compact."""
    compact = size is not None and (size[0] < FULL_SIZE[0] or size[1] < FULL_SIZE[1])
    parts: list[RenderableType] = [_header(s), Text(""), _counts(s), Text("")]
    if compact:
        parts += [
            _alarms(s),
            Text(f"small terminal: full view needs {FULL_SIZE[0]}x{FULL_SIZE[1]}", style="dim italic"),
        ]
    else:
        stages = Table("stage", "p50 ms", "p99 ms", box=None, pad_edge=False)
        for k in STAGES:
            p50, p99 = s.stage_ms.get(k, (math.nan, math.nan))
            stages.add_row(k, _ms(p50), _ms(p99))
        cams = Table("camera", "fps", "frames", "missed", "rejects", box=None, pad_edge=False)
        for name, st in s.cameras.items():
            gone = not st.get("connected", 1)
            cams.add_row(
                Text(name + (" GONE" if gone else ""), style="bold red" if gone else ""),
                f"{s.camera_fps.get(name, 0.0):.0f}", str(st["frames"]), str(st.get("missed", st["skipped"])),
                str(s.rejects_by_camera.get(name, 0)),
            )  # fmt: skip
        reasons = Table("reject reason", "count", box=None, pad_edge=False)
        for k, v in sorted(s.rejects_by_reason.items(), key=lambda kv: -kv[1])[:8]:
            reasons.add_row(k, str(v))
        recent = Table("part", "verdict", "reasons", box=None, pad_edge=False)
        for pid, verdict, why in reversed(s.recent[-8:]):
            recent.add_row(str(pid), Text(verdict, style="green" if verdict == "PASS" else "red"), why[:28])
        top = Table.grid(padding=(0, 4))
        top.add_row(stages, cams)
        bottom = Table.grid(padding=(0, 4))
        bottom.add_row(reasons, recent)
        parts += [top, Text(""), bottom, Text(""), _alarms(s)]
    if footer:
        parts += [Text(""), Text(footer, style="bold")]
    return Panel(Group(*parts), title="inspection cell")


def render_unreachable(why: str, footer: str = "") -> RenderableType:
    """What the console shows while the service is away (it keeps trying)."""
    body = Text.assemble(
        ("service not reachable\n", "bold red"), (why + "\n", ""), ("reconnecting...", "dim")
    )
    return Panel(Group(body, Text(footer, style="bold")) if footer else body, title="inspection cell")
