"""The verdict journal on real files, and the record store's replay and pruning of it."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from controller.contract import Verdict
from controller.core.types import PartTrack, ReasonCode, ViewResult, ViewStatus, ViewTrace
from controller.journal import VerdictJournal, read_segment
from controller.records import DISPOSITION_MISSING, PartRecord, RecordStore


def _track(pid: int, verdict: Verdict = Verdict.PASS) -> PartTrack:
    t = PartTrack(pid, pid * 10, pid * 10, 1.0, True)
    t.views["top"] = ViewTrace(7, 1.1, 1.11, 1.12, 1.13, ViewResult("top", ViewStatus.OK, (0.1,), ()))
    t.verdict, t.reason, t.t_fused = verdict, ReasonCode.NONE, 1.14
    return t


def _wait(cond: object, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_lines_are_durable_whole_and_a_torn_tail_is_skipped(tmp_path: Path) -> None:
    j = VerdictJournal(tmp_path / "j", "run1", segment_entries=4)
    for pid in range(1, 7):
        j.append([{"run_id": "run1", "part_id": pid}])
    assert j.syncs == 6 and j.appended == 6
    seg1, seg2 = sorted((tmp_path / "j").glob("*.jsonl"))
    assert j.closed_segments() == [seg1]  # four lines: closed; the second is open
    with seg2.open("ab") as f:
        f.write(b'{"run_id":"run1","part_')  # a crash in the middle of a batch
    j.close()
    assert [e["part_id"] for e in read_segment(seg1)[0]] == [1, 2, 3, 4]
    entries, bad = read_segment(seg2)
    assert [e["part_id"] for e in entries] == [5, 6] and bad == 1


def test_a_failed_sync_raises_and_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = VerdictJournal(tmp_path / "j", "run1")
    j.append([{"run_id": "run1", "part_id": 1}])

    def no_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", no_sync)
    with pytest.raises(OSError):
        j.append([{"run_id": "run1", "part_id": 2}])
    monkeypatch.undo()
    j.append([{"run_id": "run1", "part_id": 3}])
    j.close()
    (seg,) = (tmp_path / "j").glob("*.jsonl")
    assert [e["part_id"] for e in read_segment(seg)[0]] == [1, 3]


def test_the_next_start_replays_journaled_parts_without_a_row(tmp_path: Path) -> None:
    """Parts 1-10 journaled, rows only for 1-5 (then kill -9): the next start adds rows for 6-10,
    marked as missing their disposition, and leaves the written rows alone."""
    db = tmp_path / "r.sqlite"
    store = RecordStore(db, tmp_path / "img", "old", journal=tmp_path / "journal")
    store.start({"cell": "c"})
    assert store.journal is not None
    store.journal.append(
        [store.journal_entry(_track(pid, Verdict(1 + pid % 2)), pid == 7) for pid in range(1, 11)]
    )
    for pid in range(1, 6):
        t = _track(pid, Verdict(1 + pid % 2))
        t.attempts, t.kicked, t.expected_kick = 1, pid % 2 == 1, pid % 2 == 1
        store.put_part(PartRecord(t))
    assert _wait(lambda: store.written == 5)
    journal, store.journal = store.journal, None  # what kill -9 leaves: nothing pruned
    store.close()
    journal.close()

    again = RecordStore(db, tmp_path / "img", "new", journal=tmp_path / "journal")
    again.start({"cell": "c"})
    again.close()
    assert again.replayed == 5
    assert not list((tmp_path / "journal").glob("*.jsonl")), "a replayed segment is deleted"
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        rows = {r["part_id"]: dict(r) for r in con.execute("SELECT * FROM parts WHERE run_id = 'old'")}
    assert sorted(rows) == list(range(1, 11))
    for pid in range(1, 6):
        assert rows[pid]["kicked"] is not None and rows[pid]["ack"] == "NONE"
    for pid in range(6, 11):
        r = rows[pid]
        assert r["verdict"] == Verdict(1 + pid % 2).name
        assert (r["kicked"], r["expected_kick"], r["t_disposition"], r["ack"]) == (
            None,
            None,
            None,
            "UNKNOWN",
        )
        assert json.loads(r["alarms"]) == [DISPOSITION_MISSING]
        assert json.loads(r["views"])["top"]["scores"] == [0.1]
        assert (r["image_error"] is not None) == (pid == 7)  # its images were to be kept


def test_segments_go_once_every_part_in_them_has_its_row(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.sqlite", tmp_path / "img", "run1", journal=tmp_path / "journal")
    store.start({})
    assert store.journal is not None
    store.journal.segment_entries = 10
    for pid in range(1, 31):
        store.journal.append([store.journal_entry(_track(pid), False)])
    for pid in range(1, 31):
        if pid != 25:  # one part whose record never came
            store.put_part(PartRecord(_track(pid)))
    store.journal.close()
    store.close()
    left = sorted((tmp_path / "journal").glob("*.jsonl"))
    assert [p.name for p in left] == ["run1.000003.jsonl"], "only the segment with a part unrecorded"
