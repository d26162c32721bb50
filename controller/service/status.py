"""Status and metrics: what the console and the API show of the running cell.

Fed by the service as parts are recorded (stage latencies, rejects by camera, recent parts,
parts per minute), by the PLC I/O loop (journal syncs, the last input read) and by
housekeeping (belt speed and camera frame rates); `snapshot` puts them together with the core's
figures into one `StatusSnapshot`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

from controller.contract import Verdict
from controller.core.cell import CellCore
from controller.core.counters import Count, Counters, FrameFate
from controller.core.types import PartTrack, ViewStatus
from controller.core.window import Window
from controller.events import SubscriberFigures
from controller.interfaces import Camera
from controller.snapshot import STAGES, StatusSnapshot

#: Parts per minute are counted over this window (seconds).
RATE_WINDOW_S = 10.0


class CellStatus:
    """Figures kept between snapshots; everything runs on the event loop."""

    def __init__(self, cameras: Iterable[str], counts_per_mm: float) -> None:
        self.counts_per_mm = counts_per_mm
        self._finished: deque[float] = deque(maxlen=2000)
        self.recent: deque[tuple[int, str, str]] = deque(maxlen=12)
        # "total" is the core's own trigger-to-verdict record (`CellCore.latencies`).
        self._stages: dict[str, Window] = {k: Window(2048) for k in STAGES if k != "total"}
        self._rejects_by_camera: dict[str, int] = dict.fromkeys(cameras, 0)
        self._rates: dict[str, float] = {}
        self._rate_base: tuple[float, int, dict[str, int]] | None = None
        #: When the PLC's inputs were last read (monotonic; 0: never).
        self.last_inputs = 0.0
        #: The plant connections' figures by name, for the snapshot (set where they are started;
        #: called on the loop, reads only the publishers' own counts).
        self.plant: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None

    def part_recorded(self, t: PartTrack, now: float) -> None:
        """A finished part: counted for the rate, listed as recent, its stages measured."""
        self._finished.append(now)
        self.recent.append((t.part_id, t.verdict.name, ",".join(t.reasons)[:60]))
        st = self._stages
        ends = []
        for v in t.views.values():
            if v.t_trigger is not None and v.t_frame is not None:
                st["frame"].append(v.t_frame - v.t_trigger)
            if v.t_frame is not None and v.t_infer_start is not None:
                st["queue"].append(v.t_infer_start - v.t_frame)
            if v.t_infer_start is not None and v.t_infer_end is not None:
                st["infer"].append(v.t_infer_end - v.t_infer_start)
                ends.append(v.t_infer_end)
        if t.verdict is not Verdict.PASS and t.inspected and t.plan is not None:
            for cam in t.plan.cameras:  # the views that made it a reject: failed, missing or broken
                r = t.views[cam].result if cam in t.views else None
                if r is None or r.status is not ViewStatus.OK or r.defects:
                    self._rejects_by_camera[cam] = self._rejects_by_camera.get(cam, 0) + 1
        if ends and t.t_fused is not None:
            st["decide"].append(t.t_fused - max(ends))
        if t.t_fused is not None and t.t_first_write is not None:
            st["write"].append(t.t_first_write - t.t_fused)

    def journal_synced(self, seconds: float) -> None:
        """One verdict journal sync took this long."""
        self._stages["journal"].append(seconds)

    def measure_rates(self, now: float, position: int, frames: Mapping[str, int]) -> None:
        """Belt speed and camera frame rates since the last call (housekeeping's period)."""
        frames = dict(frames)
        if self._rate_base is not None:
            t0, p0, f0 = self._rate_base
            dt = now - t0
            if dt > 0:
                self._rates["belt"] = (position - p0) / dt / self.counts_per_mm
                for n, f in frames.items():
                    self._rates[n] = (f - f0.get(n, f)) / dt
        self._rate_base = (now, position, frames)

    def snapshot(
        self,
        core: CellCore,
        counters: Counters,
        cameras: Mapping[str, Camera],
        recipe: str,
        recipe_hash: str,
        provider: str,
        link_up: bool,
        ready: bool,
        now: float,
        events: Mapping[str, SubscriberFigures] | None = None,
    ) -> StatusSnapshot:
        """The cell as the console and the API show it; `counters` are the core's,
        `events` the event outlet's figures by subscriber."""
        c = core
        # Newest first, so only the window's parts are looked at, not the 2,000 kept.
        recent = sum(
            1 for _ in itertools.takewhile(lambda t: now - t < RATE_WINDOW_S, reversed(self._finished))
        )
        ppm = recent * 60.0 / RATE_WINDOW_S
        cams = {
            n: {
                "frames": cam.stats.frames,
                "missed": cam.stats.skipped + counters.frames_of(n, FrameFate.MISSING),
                "skipped": cam.stats.skipped,
                "underruns": cam.stats.underruns,
                "connected": int(cam.stats.connected),
            }
            for n, cam in cameras.items()
        }
        # One partial sort per series: the snapshot runs on the control loop (the API, the
        # console four times a second, the OPC UA server each second), so it is kept cheap.
        total = _ms(c.latencies)
        stages = {k: _ms(w) for k, w in self._stages.items() if len(w)}
        return StatusSnapshot(
            state=c.state.name,
            recipe=recipe,
            recipe_hash=recipe_hash[:12],
            provider=provider,
            parts=counters[Count.PARTS],
            passed=counters.verdicts[Verdict.PASS],
            failed=counters.verdicts[Verdict.FAIL],
            no_decision=counters.verdicts[Verdict.NO_DECISION],
            in_flight=c.in_flight(),
            parts_per_min=ppm,
            latency_p50_ms=total[0],
            latency_p99_ms=total[1],
            rejects_by_reason=counters.rejects_by_reason(),
            cameras=cams,
            link_up=link_up,
            heartbeat_age_s=now - self.last_inputs if self.last_inputs else float("inf"),
            alarms=dict(c.alarms),
            recent=list(self.recent),
            counters=counters.as_dict(),
            ready=ready,
            line_speed_mm_s=self._rates.get("belt", 0.0),
            rejects_by_camera={k: v for k, v in self._rejects_by_camera.items() if v},
            stage_ms={**stages, **({"total": total} if len(c.latencies) else {})},
            camera_fps={n: self._rates.get(n, 0.0) for n in cameras},
            events={name: asdict(f) for name, f in (events or {}).items()},
            plant={k: dict(v) for k, v in self.plant().items()} if self.plant is not None else {},
        )


def _ms(window: Window) -> tuple[float, float]:
    """The median and 99th percentile of a window of seconds, in ms (NaN for none)."""
    p50, p99 = window.p50_p99()
    return p50 * 1e3, p99 * 1e3
