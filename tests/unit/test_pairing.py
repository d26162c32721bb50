"""Frames paired with parts when the PLC publishes its encoder only once per (slow) scan.

A line PLC with a 10 ms scan at 4 m/s shows an encoder up to 40 mm stale. Interpolating it in
time must never pair a frame with the wrong part: a frame pairs only when exactly one expected
trigger lies within the position uncertainty, and is `ambiguous` otherwise (counted, and the
part rejected NO_DECISION), never guessed.
"""

from __future__ import annotations

import numpy as np
import pytest

from controller.contract import AlarmCode
from controller.core.cell import CellCore, CellPlan, DropFrame, Infer
from controller.core.packml import Command
from tests.plcimage import WRAP, PlcImage

CPM = 10  # counts per mm


def run_line(
    scan_s: float, speed_mm_s: float, pitch_mm: tuple[float, float], parts: int, seed: int = 3
) -> tuple[list[tuple[int, int | None]], CellCore]:
    """Returns (pairs: list of (true part, paired part or None), core)."""
    plc = PlcImage()
    plan = CellPlan(
        cameras=("a", "b"),
        camera_offsets={"a": 150 * CPM, "b": 200 * CPM},
        decision_offset=400 * CPM,
        deadline_offset=450 * CPM,
        reject_offset=500 * CPM,
        confirm_offset=550 * CPM,
        match_tolerance=15 * CPM,
        max_counts_per_s=5000 * CPM,
        min_part_pitch=20 * CPM,
    )
    core = CellCore(plan, plc.layout)
    core.inference_ready = True
    rng = np.random.default_rng(seed)
    speed = speed_mm_s * CPM  # counts/s
    start = WRAP - 200_000
    # Parts pass the sensor at these belt positions (counts after start); triggers follow exactly.
    regs = np.cumsum(rng.uniform(*pitch_mm, size=parts) * CPM).astype(int) + 1000
    triggers = sorted(
        (int(r) + off, cam, pid)
        for pid, r in enumerate(regs, start=1)
        for cam, off in plan.camera_offsets.items()
    )
    t, t_scan, next_part, k = 0.0, -1.0, 0, 0
    frames: list[tuple[float, str, float, int]] = []  # (arrival, camera, trigger time, true part)
    pairs: list[tuple[int, int | None]] = []
    end = (regs[-1] + 300 * CPM) / speed
    plc.encoder(start)
    for cmd in (None, Command.RESET, None, Command.START, None):
        if cmd is not None:
            assert core.command(cmd) is None
        t += 0.002
        core.on_plc_inputs(plc.snapshot(), t)
    t0 = t
    while t < t0 + end:
        t += 0.002  # the cell reads every 2 ms
        belt = lambda tt: int((tt - t0) * speed)  # noqa: E731
        if t - t_scan >= scan_s:  # the PLC's scan: it writes what it sees now
            t_scan = t
            plc.encoder(start + belt(t))
            while next_part < parts and regs[next_part] <= belt(t):
                next_part += 1
                plc.add_part(next_part, start + int(regs[next_part - 1]))
            plc.area["header"]["heartbeat"] = (int(plc.area["header"]["heartbeat"]) + 1) & 0xFFFF
        snap = np.frombuffer(bytes(plc.buf), dtype=plc.layout.plc_dtype)[0]  # between scans: the same
        core.on_plc_inputs(snap, t)
        while k < len(triggers) and triggers[k][0] <= belt(t):
            pos, cam, pid = triggers[k]
            t_trig = t0 + pos / speed
            frames.append((t_trig + 0.002, cam, t_trig, pid))  # frames arrive 2 ms later
            k += 1
        for f in [f for f in frames if f[0] <= t]:
            frames.remove(f)
            act = core.on_frame(f[1], f[2], 0, None, t)
            pairs.append((f[3], act.part_id if isinstance(act, Infer) else None))
            assert isinstance(act, Infer | DropFrame)
    return pairs, core


@pytest.mark.parametrize(
    ("scan_s", "speed", "pitch"),
    [(0.010, 4000.0, (27.5, 72.5)), (0.020, 1000.0, (40.0, 60.0)), (0.005, 4000.0, (40.0, 60.0))],
    ids=["10ms-4m/s-crossing", "20ms-1m/s", "5ms-4m/s"],
)
def test_no_frame_is_paired_with_the_wrong_part(
    scan_s: float, speed: float, pitch: tuple[float, float]
) -> None:
    pairs, _ = run_line(scan_s, speed, pitch, parts=240)
    wrong = [(true, got) for true, got in pairs if got is not None and got != true]
    assert not wrong, f"{len(wrong)} frames paired with the wrong part: {wrong[:5]}"
    paired = sum(got is not None for _, got in pairs)
    assert paired >= 0.9 * len(pairs), f"only {paired} of {len(pairs)} frames paired"


def test_ambiguous_frames_are_counted_and_alarmed_when_parts_are_too_close() -> None:
    """Parts closer than the uncertainty allows: frames go unpaired with an alarm, never guessed."""
    pairs, core = run_line(0.020, 4000.0, (20.0, 30.0), parts=200)
    wrong = [(true, got) for true, got in pairs if got is not None and got != true]
    assert not wrong
    assert sum(v for k, v in core.counts.items() if k.startswith("ambiguous_frame:")) > 0
    assert AlarmCode.FRAMES_AMBIGUOUS in core.alarms
    assert "scan" in core.alarms[AlarmCode.FRAMES_AMBIGUOUS]
