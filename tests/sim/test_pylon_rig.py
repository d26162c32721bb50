"""The emulated-camera rig: the line PLC's triggers become software triggers of pylon's emulated
cameras, in this process, with no PLC or subprocess."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path

from controller.interfaces import Frame
from simulators.line import LineConfig, Trigger
from simulators.pylon_rig import PylonRig


def test_frames_fired_late_carry_their_pulses_time_and_the_delay_is_measured(tmp_path: Path) -> None:
    """The rig's trigger threads share the cell's process: on a loaded machine they fire after the
    PLC's pulse. The frame must still say when the pulse came (was: when it was fired, 80 ms on,
    which put it 80 mm further along the belt than its trigger record, and the cell rejected the
    part as NO_DECISION), and the rig says how late it fired."""
    rig = PylonRig(LineConfig(camera_offsets_mm=(150.0,), parts=3), ["top"], tmp_path)
    got: list[Frame] = []
    three = threading.Event()

    def on_frame(frame: Frame) -> None:
        got.append(frame)
        frame.release()
        if len(got) == 3:
            three.set()

    rx, tx = mp.Pipe(duplex=False)
    try:
        rig.cameras[0].start(on_frame)
        rig.start(rx)
        pulses = []
        for _ in range(3):
            pulses.append(time.monotonic() - 0.08)
            tx.send(Trigger(0, pulses[-1], None))
            time.sleep(0.05)
        assert three.wait(5.0)
    finally:
        tx.close()  # the rig's trigger threads end
        rig.join()
        rig.close()
    assert [f.t_trigger for f in got] == pulses
    assert rig.lost_triggers == 0
    delays = rig.fire_delays_s()
    assert len(delays) == 3 and min(delays) >= 0.08


def test_a_camera_held_up_for_a_while_loses_no_trigger(tmp_path: Path) -> None:
    """An emulated camera takes no trigger while its grab loop is held up (its handler waits for a
    busy process and every buffer is full). The rig waits for it rather than dropping the trigger
    (was: after 100 ms), which would shift every later image of the camera by a part."""
    n = 24  # more than the rig's 16 buffers
    rig = PylonRig(LineConfig(camera_offsets_mm=(150.0,), parts=n), ["top"], tmp_path)
    counters: list[int] = []
    gate, all_in = threading.Event(), threading.Event()

    def on_frame(frame: Frame) -> None:
        gate.wait()
        counters.append(frame.counter)
        frame.release()
        if len(counters) == n:
            all_in.set()

    rx, tx = mp.Pipe(duplex=False)
    try:
        rig.cameras[0].start(on_frame)
        rig.start(rx)
        for _ in range(n):
            tx.send(Trigger(0, time.monotonic(), None))
        time.sleep(0.4)
        gate.set()
        assert all_in.wait(5.0)
    finally:
        gate.set()
        tx.close()  # the rig's trigger threads end
        rig.join()
        rig.close()
    assert rig.lost_triggers == 0
    assert counters == list(range(1, n + 1))
