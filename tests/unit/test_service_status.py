"""Status and metrics: the snapshot's figures from a known sequence of recorded parts."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from controller.contract import Verdict
from controller.core.counters import Count, Counters, FrameFate
from controller.core.packml import State
from controller.core.types import PartTrack, ReasonCode, ViewResult, ViewStatus, ViewTrace
from controller.core.window import Window
from controller.interfaces import CameraStats
from controller.service.status import CellStatus
from controller.snapshot import StatusSnapshot

CAMERAS = ("top", "left")
PLAN = SimpleNamespace(cameras=CAMERAS)


def part(pid: int, verdict: Verdict, bad: str | None = None, missing: str | None = None) -> PartTrack:
    """A finished part: views triggered at 0, frames 2 ms later, inference 1+pid ms from 5 ms,
    fused 1 ms after the last view, written 0.5 ms after that."""
    views = {}
    for cam in CAMERAS:
        if cam == missing:
            continue
        defects = ("scratch",) if cam == bad else ()
        result = ViewResult(cam, ViewStatus.OK, (), defects)
        views[cam] = ViewTrace(1, 0.0, 0.002, 0.005, 0.005 + (1 + pid) / 1000, result)
    fused = max(v.t_infer_end for v in views.values() if v.t_infer_end is not None) + 0.001
    reasons = [f"{bad}:scratch"] if bad else ([f"{missing}:missing"] if missing else [])
    return PartTrack(
        pid, pid, 0, 0.0, inspected=True, views=views, verdict=verdict, reasons=reasons,
        t_fused=fused, t_first_write=fused + 0.0005, plan=PLAN,
    )  # fmt: skip


def snap(status: CellStatus, counters: Counters, now: float, **kw: Any) -> StatusSnapshot:
    latencies = Window(8)
    for x in (0.010, 0.020, 0.030):
        latencies.append(x)
    core = SimpleNamespace(state=State.EXECUTE, latencies=latencies, alarms={13: "PLC link lost"})
    core.in_flight = lambda: 4
    cams = {n: SimpleNamespace(stats=CameraStats(frames=100, skipped=2)) for n in CAMERAS}
    args: dict[str, Any] = dict(recipe="plate-4h", recipe_hash="0123456789abcdef", provider="CPU")
    args.update({"link_up": True, "ready": True, "now": now} | kw)
    return status.snapshot(core, counters, cams, **args)  # type: ignore[arg-type]


def test_snapshot_figures_from_a_sequence_of_recorded_parts() -> None:
    status = CellStatus(CAMERAS, counts_per_mm=10.0)
    status.part_recorded(part(1, Verdict.PASS), now=80.0)  # outside the rate window at 100 s
    for pid in range(2, 8):
        status.part_recorded(part(pid, Verdict.PASS), now=95.0 + pid / 10)
    status.part_recorded(part(8, Verdict.FAIL, bad="top"), now=96.0)
    status.part_recorded(part(9, Verdict.NO_DECISION, missing="left"), now=97.0)
    status.journal_synced(0.002)
    status.last_inputs = 99.996
    counts = Counters()
    counts.add(Count.PARTS, 9)
    counts.verdicts.update({Verdict.PASS: 7, Verdict.FAIL: 1, Verdict.NO_DECISION: 1})
    counts.no_decision[ReasonCode.MISSING_FRAME] += 1
    counts.frame("left", FrameFate.MISSING)
    s = snap(status, counts, now=100.0)
    assert (s.state, s.recipe, s.recipe_hash, s.provider) == ("EXECUTE", "plate-4h", "0123456789ab", "CPU")
    assert (s.parts, s.passed, s.failed, s.no_decision, s.in_flight) == (9, 7, 1, 1, 4)
    assert s.parts_per_min == 8 * 6.0  # 8 parts in the last 10 s
    assert s.rejects_by_reason == {"missing_frame": 1, "defect": 1}
    assert s.rejects_by_camera == {"top": 1, "left": 1}  # the failed view and the missing one
    assert s.cameras["left"] == {"frames": 100, "missed": 3, "skipped": 2, "underruns": 0, "connected": 1}
    assert s.cameras["top"]["missed"] == 2
    assert s.heartbeat_age_s == pytest.approx(0.004)
    assert s.alarms == {13: "PLC link lost"} and s.link_up and s.ready
    assert s.recent[-2:] == [(8, "FAIL", "top:scratch"), (9, "NO_DECISION", "left:missing")]
    assert len(s.recent) == 9 and s.counters == {
        "parts": 9, "verdict:pass": 7, "verdict:fail": 1, "verdict:no_decision": 1,
        "no_decision:missing_frame": 1, "missing_frame:left": 1,
    }  # fmt: skip
    assert (s.latency_p50_ms, s.latency_p99_ms) == pytest.approx((20.0, 29.8))
    ms = s.stage_ms
    assert ms["frame"] == pytest.approx((2.0, 2.0)) and ms["queue"] == pytest.approx((3.0, 3.0))
    assert ms["infer"][0] == pytest.approx(6.0)  # views of parts 1..9 take 2..10 ms: median 6
    assert ms["decide"] == pytest.approx((1.0, 1.0)) and ms["write"] == pytest.approx((0.5, 0.5))
    assert ms["journal"] == pytest.approx((2.0, 2.0)) and ms["total"][0] == pytest.approx(20.0)
    assert s.line_speed_mm_s == 0.0 and s.camera_fps == {"top": 0.0, "left": 0.0}  # not measured yet


def test_only_the_last_twelve_parts_are_recent() -> None:
    status = CellStatus(CAMERAS, counts_per_mm=10.0)
    for pid in range(1, 21):
        status.part_recorded(part(pid, Verdict.PASS), now=1.0)
    s = snap(status, Counters(), now=1.0)
    assert [r[0] for r in s.recent] == list(range(9, 21))


def test_an_idle_cell_has_no_figures_but_no_errors() -> None:
    s = snap(CellStatus(CAMERAS, counts_per_mm=10.0), Counters(), now=5.0, link_up=False, ready=False)
    assert s.parts_per_min == 0.0 and s.heartbeat_age_s == math.inf and s.rejects_by_reason == {}
    assert "frame" not in s.stage_ms and "total" in s.stage_ms  # the core's latencies are there


def test_belt_speed_and_frame_rates_over_the_housekeeping_period() -> None:
    status = CellStatus(CAMERAS, counts_per_mm=10.0)
    status.measure_rates(10.0, 1_000, {"top": 50, "left": 50})
    status.measure_rates(10.5, 6_000, {"top": 60, "left": 55})  # 500 mm in 0.5 s
    s = snap(status, Counters(), now=10.5)
    assert s.line_speed_mm_s == pytest.approx(1000.0)
    assert s.camera_fps == pytest.approx({"top": 20.0, "left": 10.0})
    status.measure_rates(11.0, 6_000, {"top": 60, "left": 55})  # stopped
    s = snap(status, Counters(), now=11.0)
    assert s.line_speed_mm_s == 0.0 and s.camera_fps == {"top": 0.0, "left": 0.0}


def test_the_plant_connections_figures_are_in_the_snapshot_and_its_json() -> None:
    from dataclasses import asdict

    from controller.snapshot import snapshot_from_dict

    status = CellStatus(CAMERAS, counts_per_mm=10.0)
    assert snap(status, Counters(), now=5.0).plant == {}  # none enabled
    figures = {
        "mqtt": {"connected": True, "sent": 40, "queued": 2, "dropped": 0},
        "opcua": {"connected": True, "sent": 42, "queued": 0, "dropped": 1, "clients": 2},
    }
    status.plant = lambda: figures
    s = snap(status, Counters(), now=5.0)
    assert s.plant == figures and s.plant is not figures
    assert snapshot_from_dict(asdict(s)).plant == figures
