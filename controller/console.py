"""The operator's console: pure render functions from an immutable `StatusSnapshot` to rich renderables."""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from controller.service import StatusSnapshot

_STATE_STYLE = {"EXECUTE": "bold green", "HELD": "bold yellow", "ABORTED": "bold red", "STOPPED": "bold"}


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1f} ms"


def render_status(s: StatusSnapshot) -> RenderableType:
    """The whole console screen for one snapshot."""
    head = Text.assemble(
        ("state ", "dim"), (s.state, _STATE_STYLE.get(s.state, "bold cyan")),
        ("   recipe ", "dim"), (f"{s.recipe} ({s.recipe_hash})", "bold"),
        ("   inference ", "dim"), (s.provider.replace("ExecutionProvider", ""), "bold"),
        ("   PLC ", "dim"),
        ("up" if s.link_up else "DOWN", "green" if s.link_up else "bold red"),
        (f" hb {s.heartbeat_age_s * 1e3:.0f} ms" if math.isfinite(s.heartbeat_age_s) else " hb -", "dim"),
    )  # fmt: skip
    rejected = s.failed + s.no_decision
    decided = s.passed + rejected
    yield_ = f"{100.0 * s.passed / decided:.1f} %" if decided else "-"
    counts = Table.grid(padding=(0, 2))
    for _ in range(6):
        counts.add_column(justify="right")
    counts.add_row("parts", str(s.parts), "passed", str(s.passed), "rejected", str(rejected))
    counts.add_row("parts/min", f"{s.parts_per_min:.0f}", "yield", yield_, "in flight", str(s.in_flight))
    counts.add_row(
        "latency p50", _ms(s.latency_p50_ms), "p99", _ms(s.latency_p99_ms), "no decision", str(s.no_decision)
    )
    reasons = Table("reject reason", "count", box=None, pad_edge=False)
    for k, v in sorted(s.rejects_by_reason.items(), key=lambda kv: -kv[1]):
        reasons.add_row(k, str(v))
    cams = Table("camera", "frames", "skipped", "underruns", box=None, pad_edge=False)
    for name, st in s.cameras.items():
        cams.add_row(name, str(st["frames"]), str(st["skipped"]), str(st["underruns"]))
    recent = Table("part", "verdict", "reasons", box=None, pad_edge=False)
    for pid, verdict, why in reversed(s.recent[-8:]):
        style = "green" if verdict == "PASS" else "red"
        recent.add_row(str(pid), Text(verdict, style=style), why)
    alarms: RenderableType = (
        Text("\n".join(f"{c}: {t}" for c, t in sorted(s.alarms.items())), style="bold red")
        if s.alarms
        else Text("no active alarms", style="dim")
    )
    body = Table.grid(padding=(0, 4))
    body.add_row(reasons, cams, recent)
    return Panel(Group(head, Text(""), counts, Text(""), body, Text(""), alarms), title="inspection cell")
