"""The record store on a real SQLite file (WAL)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from controller.contract import Verdict
from controller.core.types import PartTrack, ReasonCode, ViewResult, ViewStatus, ViewTrace
from controller.records import PartRecord, RecordStore


def test_every_part_is_one_row_with_stage_times_and_images(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.sqlite", tmp_path / "img", "run1")
    store.start({"recipe_hash": "r" * 64, "model_hash": "m" * 64, "cell": "c"})
    for pid in range(1, 301):
        t = PartTrack(pid, pid * 10, pid * 10, 1.0, True)
        t.views["top"] = ViewTrace(
            7, 1.1, 1.11, 1.12, 1.13, ViewResult("top", ViewStatus.OK, (0.9,), ("spot",))
        )
        t.verdict, t.reason, t.reasons = Verdict.FAIL, ReasonCode.DEFECT, ["top:spot"]
        t.t_first_write = 1.15
        imgs = {"top": np.zeros((8, 8, 3), np.uint8)} if pid == 5 else {}
        store.put_part(PartRecord(t, imgs))
    store.put_alarm(20, "part 5: kick does not match verdict")
    store.close()
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute(
            "SELECT part_id, verdict, latency_ms, views, images, recipe_hash FROM parts"
        ).fetchall()
        alarms = db.execute("SELECT code FROM alarms").fetchall()
    assert len(rows) == 300
    pid, verdict, latency, views, images, rhash = rows[4]
    assert (pid, verdict, rhash) == (5, "FAIL", "r" * 64)
    assert abs(latency - 50.0) < 1e-6
    assert json.loads(views)["top"]["defects"] == ["spot"]
    assert Path(json.loads(images)[0]).is_file()
    assert alarms == [(20,)]
