"""The operator's console: pure render functions from an immutable `StatusSnapshot` to rich renderables.

The same screen serves `cellctl demo` (in process) and `cellctl console` (attached to a running
service through the local API). Below `FULL_SIZE` it shows the essentials and says so.
"""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.measure import Measurement
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


def cut(text: str, width: int) -> str:
    """`text` in `width` characters: whole reasons and words, then `…` when some are left out
    (a single word wider than `width` is the only one cut inside)."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    if text[width - 1] in ", ":  # the cut falls between two words
        return head.rstrip() + "…"
    stop = max(head.rfind(","), head.rfind(" "))
    return (head[: stop + 1].rstrip() if stop > 0 else head) + "…"


def rejected(s: StatusSnapshot) -> int:
    """Parts the PLC was told to kick: defects and NO_DECISION."""
    return s.failed + s.no_decision


def undecided(s: StatusSnapshot) -> int:
    """Parts without a verdict yet: parts = passed + rejected + these."""
    return max(0, s.parts - s.passed - rejected(s))


def no_decision_causes(s: StatusSnapshot) -> list[tuple[str, int]]:
    """NO_DECISION parts by cause, most first (`not inspecting`: entered while not in Execute)."""
    causes = sorted(
        ((k.replace("_", " "), v) for k, v in s.rejects_by_reason.items() if k != "defect" and v),
        key=lambda kv: (-kv[1], kv[0]),
    )
    rest = s.no_decision - sum(v for _, v in causes)
    return [*causes, ("other", rest)] if rest > 0 else causes


def attention(s: StatusSnapshot) -> list[str]:
    """Why the cell needs someone (what makes `cellctl status` exit 3); empty when it does not."""
    why = []
    if s.state in ("ABORTED", "ABORTING"):
        why.append("aborted")
    if s.state in ("HELD", "HOLDING") and s.alarms:
        why.append("held by alarm " + ", ".join(str(c) for c in sorted(s.alarms)))
    if not s.link_up:
        why.append("PLC link down")
    return why


def status_lines(s: StatusSnapshot) -> list[str]:
    """`cellctl status`: the state, totals that add up, rejects by cause, every alarm's text."""
    hb = f", heartbeat {s.heartbeat_age_s * 1e3:.0f} ms" if math.isfinite(s.heartbeat_age_s) else ""
    causes = ", ".join(f"{v} {k}" for k, v in no_decision_causes(s))
    lines = [
        f"{s.state}  recipe {s.recipe} ({s.recipe_hash})  PLC {'up' if s.link_up else 'DOWN'}{hb}  "
        f"{s.parts_per_min:.0f} parts/min  latency p99 {_ms(s.latency_p99_ms)} ms",
        f"parts {s.parts}: {s.passed} passed, {rejected(s)} rejected, {undecided(s)} in flight",
        f"rejected {rejected(s)}: {s.failed} defect, {s.no_decision} no decision"
        + (f" ({causes})" if causes else ""),
    ]
    lines += [f"alarm {c}: {t}" for c, t in sorted(s.alarms.items())] or ["no active alarms"]
    plant = plant_line(s)
    if plant is not None:
        lines.append(f"plant: {plant}")
    why = attention(s)
    if why:
        lines.append("needs attention: " + "; ".join(why))
    return lines


def _header(s: StatusSnapshot, compact: bool = False) -> Text:
    """The state line; `compact`: the state, recipe and PLC link only, on one line (`…` where
    the screen is narrower still), for the smallest screens."""
    state = (s.state, _STATE_STYLE.get(s.state, "bold cyan"))
    plc = ("up" if s.link_up else "DOWN", "green" if s.link_up else "bold red")
    if compact:
        text = Text.assemble(state, ("  ", ""), (s.recipe, "bold"), ("  PLC ", "dim"), plc)
        text.no_wrap, text.overflow = True, "ellipsis"
        return text
    hb = f" hb {s.heartbeat_age_s * 1e3:.0f} ms" if math.isfinite(s.heartbeat_age_s) else " hb -"
    return Text.assemble(
        ("state ", "dim"), state,
        ("  recipe ", "dim"), (f"{s.recipe} ({s.recipe_hash})", "bold"),
        ("  inference ", "dim"), (s.provider.replace("ExecutionProvider", ""), "bold"),
        ("  PLC ", "dim"), plc, (hb, "dim"),
    )  # fmt: skip


def plant_line(s: StatusSnapshot) -> str | None:
    """The plant connections in one line (`MQTT up 40 sent 0 queued 0 dropped │ OPC UA up 2
    clients 42 sent 0 dropped`); None when none is enabled."""
    parts = []
    for name, label in (("mqtt", "MQTT"), ("opcua", "OPC UA")):
        f = s.plant.get(name)
        if f is None:
            continue
        up = "up" if f.get("connected") else "DOWN"
        clients = f" {f.get('clients', 0)} clients" if name == "opcua" else ""
        queued = f" {f.get('queued', 0)} queued" if name == "mqtt" else ""
        parts.append(f"{label} {up}{clients} {f.get('sent', 0)} sent{queued} {f.get('dropped', 0)} dropped")
    return " │ ".join(parts) if parts else None


def _plant(s: StatusSnapshot) -> Text | None:
    line = plant_line(s)
    if line is None:
        return None
    return Text.assemble(("plant ", "dim"), (line, "bold red" if " DOWN " in line else ""))


def _figures(s: StatusSnapshot) -> list[tuple[str, str]]:
    """The count figures as (label, value), three to a row in the full view."""
    decided = s.passed + rejected(s)
    yield_ = f"{100.0 * s.passed / decided:.1f} %" if decided else "-"
    return [
        ("parts", str(s.parts)), ("passed", str(s.passed)), ("rejected", str(rejected(s))),
        ("parts/min", f"{s.parts_per_min:.0f}"), ("yield", yield_), ("in flight", str(undecided(s))),
        ("line mm/s", f"{s.line_speed_mm_s:.0f}"), ("no decision", str(s.no_decision)),
        ("latency p99", f"{_ms(s.latency_p99_ms)} ms"),
    ]  # fmt: skip


#: On a narrow screen, fewer figures to a row, the most wanted first.
_NARROW_ORDER = ("parts", "passed", "rejected", "no decision", "in flight", "yield", "parts/min",
                 "latency p99", "line mm/s")  # fmt: skip


def _counts(s: StatusSnapshot, per_row: int = 3, most: int | None = None) -> Table:
    """The figures, `per_row` (label, value) pairs a row (3: the full view's order; fewer: the
    most wanted first), the first `most` of them (all: None)."""
    figures = _figures(s)
    if per_row != 3:
        rank = {label: i for i, label in enumerate(_NARROW_ORDER)}
        figures.sort(key=lambda f: rank[f[0]])
    figures = figures[:most]
    t = Table.grid(padding=(0, 2))
    for _ in range(per_row):
        t.add_column(justify="right")
        t.add_column(justify="right", no_wrap=True)
    for i in range(0, len(figures), per_row):
        t.add_row(*(x for pair in figures[i : i + per_row] for x in pair))
    return t


def _tables(s: StatusSnapshot) -> tuple[RenderableType, RenderableType]:
    """The stage and camera tables side by side; rejects by reason and the last parts."""
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
        recent.add_row(str(pid), Text(verdict, style="green" if verdict == "PASS" else "red"), cut(why, 28))
    top = Table.grid(padding=(0, 4))
    top.add_row(stages, cams)
    bottom = Table.grid(padding=(0, 4))
    bottom.add_row(reasons, recent)
    return top, bottom


def _footer(footer: str, keys: str) -> list[RenderableType]:
    return [Text(line, style="bold") for line in (footer, keys) if line]


def _alarm_lines(s: StatusSnapshot) -> list[str]:
    return [f"alarm {c}: {t}" for c, t in sorted(s.alarms.items())]


def _alarms(s: StatusSnapshot, most: int | None = None) -> RenderableType:
    lines = _alarm_lines(s)
    if not lines:
        return Text("no active alarms", style="dim")
    if most is not None and len(lines) > most:
        lines = [*lines[: most - 1], f"… and {len(lines) - most + 1} more alarms"]
    return Text("\n".join(lines), style="bold red")


def _panel(blocks: list[RenderableType], tail: list[RenderableType], spaced: bool) -> RenderableType:
    parts: list[RenderableType] = []
    for b in blocks if not tail else [*blocks, Group(*tail)]:
        parts += [Text("")] if spaced and parts else []
        parts.append(b)
    return Panel(Group(*parts), title="inspection cell")


def render_status(
    s: StatusSnapshot, size: tuple[int, int] | None = None, footer: str = "", keys: str = ""
) -> RenderableType:
    """The whole console screen for one snapshot. `footer` is a message line and `keys` the key
    legend; both are always shown. With `size` (columns, rows) it shows what fits, in this order:
    the header, counts and alarms; the stage and camera tables; rejects by reason and the last
    parts. Blank lines go first, then tables, then alarms past the first."""
    top, bottom = _tables(s)
    plant = _plant(s)
    tail = _footer(footer, keys)
    if size is None:
        head: list[RenderableType] = [_header(s), _counts(s), *([plant] if plant is not None else [])]
        return _panel([*head, top, bottom, _alarms(s)], tail, spaced=True)
    # Each block measured once in the panel's inner width (a table that would fold is left out).
    import io  # an off-screen console of its own, only to measure

    from rich.console import Console

    inner = max(1, size[0] - 4)
    probe = Console(width=inner, file=io.StringIO(), color_system=None, legacy_windows=False)
    opts = probe.options.update(width=inner, height=None)

    def rows(r: RenderableType) -> int:
        return len(probe.render_lines(r, opts, pad=False))

    def width(r: RenderableType) -> int:
        """The width `r` takes unfolded (the probe's own `measure` stops at its width)."""
        return Measurement.get(probe, probe.options.update(width=10_000), r).maximum

    # As many figures to a row as fit the width without folding a label.
    per_row = next((n for n in (3, 2) if width(_counts(s, n)) <= inner), 1)
    counts = _counts(s, per_row)
    head = [_header(s), counts, *([plant] if plant is not None else [])]
    fixed = 2 + sum(rows(b) for b in head) + sum(rows(t) for t in tail)  # 2: the panel's border
    alarm_rows = [rows(Text(line)) for line in _alarm_lines(s)] or [1]
    tables = [t for t in (top, bottom) if width(t) <= inner]
    table_rows = [rows(t) for t in tables]
    note = Text(f"small terminal: full view needs {FULL_SIZE[0]}x{FULL_SIZE[1]}", style="dim italic")
    choices = [(k, spaced) for k in range(len(tables), -1, -1) for spaced in (True, False)]
    for k, spaced in choices:
        whole = k == 2
        blocks = len(head) + k + 1 + (not whole) + bool(tail)
        height = fixed + sum(table_rows[:k]) + sum(alarm_rows) + (not whole) + spaced * (blocks - 1)
        if height <= size[1]:
            return _panel([*head, *tables[:k], _alarms(s), *([] if whole else [note])], tail, spaced)
    # Not even the essentials: what fits, the most wanted first (the state, the first alarm,
    # the main figures, the other alarms, the other figures, the plant, the note), one line
    # an alarm; the legend always.
    room = size[1] - 3 - sum(rows(t) for t in tail)  # 3: the border and the state line
    alarm_lines = 1 if room >= 1 else 0
    room -= alarm_lines
    total = len(_figures(s))
    grid_rows = 0  # rows of figures shown (a row each: the width was chosen so none folds)
    for want in (4, total):  # the main figures, then the rest once the alarms are in
        more = min(-(-min(want, total) // per_row) - grid_rows, room)
        grid_rows, room = grid_rows + max(more, 0), room - max(more, 0)
        if want == 4:
            extra = min(max(len(_alarm_lines(s)) - alarm_lines, 0), room)
            alarm_lines, room = alarm_lines + extra, room - extra
    figures = min(grid_rows * per_row, total)
    kept = [b for b in (plant, note) if b is not None]
    for b in list(kept):
        if rows(b) <= room:
            room -= rows(b)
        else:
            kept.remove(b)
    shown: list[RenderableType] = [_header(s, compact=True)]
    shown += [_counts(s, per_row, figures)] if figures else []
    shown += [b for b in kept if b is plant]
    shown += [_one_line_alarms(s, alarm_lines)] if alarm_lines else []
    shown += [b for b in kept if b is note]
    return _panel(shown, tail, spaced=False)


def _one_line_alarms(s: StatusSnapshot, lines: int) -> Text:
    """The alarms in `lines` lines of one line each (cut with `…`): all of them if they fit,
    else the first ones and how many more."""
    alarms = _alarm_lines(s)
    if not alarms:
        text = Text("no active alarms", style="dim")
    elif len(alarms) <= lines:
        text = Text("\n".join(alarms), style="bold red")
    elif lines == 1:
        text = Text(f"{alarms[0]} (+{len(alarms) - 1} more)", style="bold red")
    else:
        shown = alarms[: lines - 1]
        text = Text("\n".join([*shown, f"… and {len(alarms) - len(shown)} more alarms"]), style="bold red")
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def render_unreachable(
    why: str,
    footer: str = "",
    keys: str = "",
    heading: tuple[str, str] = ("service not reachable", "bold red"),
    trying: str = "reconnecting...",
) -> RenderableType:
    """What the console shows while the service is away (it keeps trying): `heading` (text and
    style) over why, and what it is doing meanwhile."""
    body = Text.assemble((heading[0] + "\n", heading[1]), (why + "\n", ""), (trying, "dim"))
    tail = _footer(footer, keys)
    return Panel(Group(body, *tail) if tail else body, title="inspection cell")
