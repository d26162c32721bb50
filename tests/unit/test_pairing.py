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
from controller.core.counters import FrameFate
from controller.core.packml import Command
from tests.plcimage import WRAP, PlcImage

CPM = 10  # counts per mm


def run_line(
    scan_s: float,
    speed_mm_s: float,
    pitch_mm: tuple[float, float],
    parts: int,
    seed: int = 3,
    trigger_ring: bool = False,
    strays: tuple[int, ...] = (),
    lost: tuple[int, ...] = (),
) -> tuple[list[tuple[int, int | None]], CellCore]:
    """Returns (pairs: list of (true part, paired part or None), core).

    With `trigger_ring` the PLC publishes each trigger at its scan and each frame carries its
    camera's trigger counter (counting from 1000, so the cell must lock on); `strays` are part
    ids after whose camera-a trigger a stray pulse (no part, unknown to the PLC) reaches camera a;
    `lost` are part ids whose camera-a pulse never reaches the camera (no frame, not counted).
    """
    plc = PlcImage()
    layout = plc.layout
    trig = np.zeros((), dtype=layout.trig_dtype)
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
        trigger_cameras=("a", "b") if trigger_ring else (),
    )
    core = CellCore(plan, plc.layout)
    core.models_ready()
    rng = np.random.default_rng(seed)
    speed = speed_mm_s * CPM  # counts/s
    start = WRAP - 200_000
    # Parts pass the sensor at these belt positions (counts after start); triggers follow exactly.
    regs = np.cumsum(rng.uniform(*pitch_mm, size=parts) * CPM).astype(int) + 1000
    triggers = sorted(
        [
            (int(r) + off, cam, pid)
            for pid, r in enumerate(regs, start=1)
            for cam, off in plan.camera_offsets.items()
        ]
        + [(int(regs[pid - 1] + regs[pid]) // 2 + 1500, "a", 0) for pid in strays]  # half a pitch on
    )
    cam_count = {"a": 999, "b": 999}  # the cameras' own trigger counters
    plc_count = {"a": 0, "b": 0}  # the PLC's, per camera, from its start
    unpublished: list[tuple[int, str, int]] = []
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
            for pos, cam, pid in unpublished:  # the PLC's trigger ring, written at its scan
                plc_count[cam] += 1
                seq = int(trig["header"]["trig_seq"]) + 1
                slot = trig["slots"][seq % layout.ring_size]
                slot["camera"], slot["cam_seq"], slot["part_id"] = "ab".index(cam), plc_count[cam], pid
                slot["encoder"] = (start + pos) % WRAP
                trig["header"]["trig_seq"] = seq
            unpublished.clear()
        snap = np.frombuffer(bytes(plc.buf), dtype=plc.layout.plc_dtype)[0]  # between scans: the same
        acts = core.on_plc_inputs(snap, t, triggers=trig.copy() if trigger_ring else None)
        for act in acts:
            if isinstance(act, Infer | DropFrame):  # a frame that waited for its trigger record
                true = act.token
                pairs.append((true, act.part_id if isinstance(act, Infer) else None))
        while k < len(triggers) and triggers[k][0] <= belt(t):
            pos, cam, pid = triggers[k]
            t_trig = t0 + pos / speed
            if pid:
                unpublished.append((pos, cam, pid))
            if cam == "a" and pid in lost:
                k += 1
                continue
            cam_count[cam] += 1
            frames.append((t_trig + 0.002, cam, t_trig, pid, cam_count[cam]))  # frames arrive 2 ms later
            k += 1
        for f in [f for f in frames if f[0] <= t]:
            frames.remove(f)
            act = core.on_frame(f[1], f[2], f[4], f[3], t)  # the frame's token: its true part id
            if act is not None:
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
    assert core.counters.of_fate(FrameFate.AMBIGUOUS) > 0
    assert AlarmCode.FRAMES_AMBIGUOUS in core.alarms
    assert "scan" in core.alarms[AlarmCode.FRAMES_AMBIGUOUS]


def test_trigger_ring_pairs_every_frame_exactly() -> None:
    """A 10 ms scan at 4 m/s, parts crossing a station in one scan: frames pair by counter."""
    pairs, core = run_line(0.010, 4000.0, (27.5, 72.5), parts=240, trigger_ring=True)
    wrong = [(true, got) for true, got in pairs if got is not None and got != true]
    assert not wrong, f"{len(wrong)} frames paired with the wrong part: {wrong[:5]}"
    paired = sum(got is not None for _, got in pairs)
    assert paired >= len(pairs) - 4, f"only {paired} of {len(pairs)} frames paired"  # the lock's first
    assert AlarmCode.TRIGGER_PAIRING not in core.alarms


def test_a_stray_trigger_pulse_breaks_the_lock_and_it_locks_again() -> None:
    pairs, core = run_line(0.002, 1000.0, (45.0, 55.0), parts=120, trigger_ring=True, strays=(40, 80))
    wrong = [(true, got) for true, got in pairs if got is not None and got != true and true != 0]
    assert not wrong, wrong[:5]
    assert all(got is None for true, got in pairs if true == 0), "a stray frame is never paired"
    assert core.pairing is not None
    assert core.pairing.counters.trigger_resyncs["a"] >= 2
    late = [got for true, got in pairs if true > 90]
    assert late and all(g is not None for g in late), "locked again after the stray pulse"


@pytest.mark.parametrize(
    ("strays", "lost"), [((), ()), ((40, 80), ()), ((), (60,))], ids=["clean", "strays", "lost"]
)
def test_parts_too_close_for_positions_are_rejected_not_trusted_to_the_counter(
    strays: tuple[int, ...], lost: tuple[int, ...]
) -> None:
    """Parts closer than the position uncertainty: a stray or lost pulse could not be told from
    the counter, so such frames are rejected (ambiguous), never paired with the wrong part."""
    pairs, core = run_line(
        0.020, 4000.0, (20.0, 30.0), parts=200, trigger_ring=True, strays=strays, lost=lost
    )
    wrong = [(true, got) for true, got in pairs if got is not None and got != true]
    assert not wrong, f"{len(wrong)} frames paired with the wrong part: {wrong[:5]}"
    assert core.counters.of_fate(FrameFate.AMBIGUOUS) > 0


@pytest.mark.parametrize(("strays", "lost"), [((40, 80), ()), ((), (60,))], ids=["strays", "lost"])
def test_a_stray_or_lost_pulse_never_shifts_the_pairing(
    strays: tuple[int, ...], lost: tuple[int, ...]
) -> None:
    pairs, _ = run_line(0.002, 1000.0, (45.0, 55.0), parts=120, trigger_ring=True, strays=strays, lost=lost)
    wrong = [(true, got) for true, got in pairs if got is not None and got != true and true != 0]
    assert not wrong, wrong[:5]
