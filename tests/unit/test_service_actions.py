"""The service carries out every action of a batch, whatever one of them does.

Found by the 60-minute soak: an Infer for a part decided later in the same batch raised in the
service (KeyError), and the actions after it in that batch were never carried out: 6 parts had
no record, 4 of them passed by the PLC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.contract import AlarmCode, Verdict
from controller.core.cell import Infer
from controller.interfaces import Frame
from tests.unit.test_service_events import finished, service


def test_an_action_that_fails_costs_only_itself_and_stops_the_line_visibly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(tmp_path)
    recorded: list[int] = []
    put_part = svc.store.put_part

    def put_part_failing_once(record: Any) -> None:
        if record.track.part_id == 7:
            raise RuntimeError("a bug in one action")
        recorded.append(record.track.part_id)
        put_part(record)

    monkeypatch.setattr(svc.store, "put_part", put_part_failing_once)
    svc.actions.carry_out([finished(svc, 7), finished(svc, 8), finished(svc, 9, Verdict.FAIL)])
    assert recorded == [8, 9]  # the parts after the failing action still get their records
    assert svc.core.alarm_active(AlarmCode.CONTROL_LOOP_ERROR)  # a bug holds the line, visibly


def test_an_infer_for_a_part_no_longer_tracked_does_not_raise(tmp_path: Path) -> None:
    svc = service(tmp_path)
    frames: list[int] = []
    frame = Frame("top", 1, 0.0, 0.0, np.zeros((4, 4, 3), np.uint8), lambda: frames.append(1))
    token = svc.images.arrive(frame)
    svc.actions.carry_out([Infer(424242, "top", token), finished(svc, 5)])
    assert not svc.core.alarm_active(AlarmCode.CONTROL_LOOP_ERROR)
