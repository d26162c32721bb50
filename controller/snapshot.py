"""The cell's status as the console and the API show it: an immutable snapshot and its JSON form.

A leaf module: the console (`cellctl console`, a thin client) imports it without the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StatusSnapshot:
    """An immutable view of the cell for the console and the API."""

    state: str
    recipe: str
    recipe_hash: str
    provider: str
    parts: int
    passed: int
    failed: int
    no_decision: int
    in_flight: int
    parts_per_min: float
    latency_p50_ms: float
    latency_p99_ms: float
    rejects_by_reason: dict[str, int]
    cameras: dict[str, dict[str, int]]
    link_up: bool
    heartbeat_age_s: float
    alarms: dict[int, str]
    recent: list[tuple[int, str, str]]
    counters: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    line_speed_mm_s: float = 0.0
    rejects_by_camera: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage: (p50, p99)
    camera_fps: dict[str, float] = field(default_factory=dict)
    #: The event outlet's subscribers by name: queued, delivered, dropped, failed, queue_size.
    events: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The plant connections the cell config enables, by name ("mqtt", "opcua"): connected,
    #: sent, queued, dropped; OPC UA also clients. Empty when none is enabled.
    plant: dict[str, dict[str, Any]] = field(default_factory=dict)


def snapshot_from_dict(d: dict[str, Any]) -> StatusSnapshot:
    """A snapshot as the API sends it (JSON) back into a `StatusSnapshot`."""
    known = {f for f in StatusSnapshot.__dataclass_fields__}
    v = {k: val for k, val in d.items() if k in known}
    v["alarms"] = {int(k): str(t) for k, t in d.get("alarms", {}).items()}
    v["recent"] = [tuple(r) for r in d.get("recent", [])]
    v["stage_ms"] = {k: (float(a), float(b)) for k, (a, b) in d.get("stage_ms", {}).items()}
    if v.get("heartbeat_age_s") is None:
        v["heartbeat_age_s"] = float("inf")
    return StatusSnapshot(**v)


#: Stages of one part's way, for the console: what each latency measures.
STAGES = {
    "frame": "trigger to frame received",
    "queue": "frame to inference start",
    "infer": "inference of the batch",
    "decide": "last view to verdict",
    "write": "verdict to PLC write",
    "journal": "verdict journal sync",
    "total": "trigger to verdict written",
}
