"""The record store on a real SQLite file (WAL)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

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


def _part(pid: int) -> PartTrack:
    t = PartTrack(pid, pid * 10, pid * 10, 1.0, True)
    t.verdict, t.reason, t.reasons = Verdict.FAIL, ReasonCode.DEFECT, ["top:spot"]
    return t


def _rows(db_path: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT part_id, images, image_error FROM parts ORDER BY part_id").fetchall()


def _fill(path: Path) -> None:
    """Write `path` until its disk is full."""
    with open(path, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def _wait(cond: object, timeout: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_an_image_that_cannot_be_saved_never_costs_its_record(tmp_path: Path) -> None:
    """Images folder read-only mid-run: every row written, saying why its images are missing."""
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions; the full-disk test covers this as root")
    store = RecordStore(tmp_path / "r.sqlite", tmp_path / "img", "run1")
    store.start({})
    img = {"top": np.zeros((8, 8, 3), np.uint8)}
    for pid in range(1, 51):
        store.put_part(PartRecord(_part(pid), img))
    assert _wait(lambda: store.written == 50)
    (tmp_path / "img" / "run1").chmod(0o500)
    try:
        for pid in range(51, 101):
            store.put_part(PartRecord(_part(pid), img))
        store.close()
    finally:
        (tmp_path / "img" / "run1").chmod(0o700)
    rows = _rows(tmp_path / "r.sqlite")
    assert [r[0] for r in rows] == list(range(1, 101))
    assert all(r[2] and "EACCES" in r[2] for r in rows[50:])


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: a disk that fills up for real."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_keeps_every_record_makes_room_and_leaves_no_orphans(
    tiny_disk: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    store = RecordStore(tmp_path / "r.sqlite", tiny_disk / "img", "run1")
    store.start({})
    for pid in range(1, 401):  # ~12 KB of noise per part: 5 MB of images for a 2 MB disk
        store.put_part(PartRecord(_part(pid), {"top": rng.integers(0, 255, (64, 64, 3), np.uint8)}))
    store.close()
    rows = _rows(tmp_path / "r.sqlite")
    assert [r[0] for r in rows] == list(range(1, 401)), "a record for every part"
    referenced = {p for _, images, _ in rows for p in json.loads(images)}
    on_disk = {str(p) for p in (tiny_disk / "img").glob("*/*.png")}
    assert on_disk <= referenced, "no orphan images"
    assert store.disk_full or store.image_errors == 0
    assert any(not json.loads(images) for _, images, _ in rows[:100]) or store.image_errors == 0


def test_rows_that_cannot_be_committed_are_kept_and_retried(tiny_disk: Path) -> None:
    """The database's disk is full: `failing` says so, nothing is dropped, and once there is
    room again every row is written."""
    filler = tiny_disk / "filler"
    store = RecordStore(tiny_disk / "r.sqlite", tiny_disk / "img", "run1")
    store.retry_s = 0.05
    store.start({})
    _fill(filler)
    for pid in range(1, 2001):
        store.put_part(PartRecord(_part(pid)))
    assert _wait(lambda: store.failing is not None), "a store that cannot write says so"
    filler.unlink()
    assert _wait(lambda: store.failing is None and store.written == 2000)
    store.close()
    with sqlite3.connect(tiny_disk / "r.sqlite") as db:
        assert db.execute("SELECT count(*) FROM parts").fetchone()[0] == 2000


def test_a_store_that_cannot_keep_up_never_blocks_the_caller(tiny_disk: Path) -> None:
    """Its queue full and its disk full: puts return at once (the control loop never waits),
    the rows wait in order, `failing` says so, and all are written once there is room."""
    import time

    filler = tiny_disk / "filler"
    store = RecordStore(tiny_disk / "r.sqlite", tiny_disk / "img", "run1", queue_size=10)
    store.retry_s = 0.05
    store.start({})
    _fill(filler)
    t0 = time.monotonic()
    for pid in range(1, 3001):
        store.put_part(PartRecord(_part(pid)))
    assert time.monotonic() - t0 < 2.0, "puts must not wait for the disk"
    assert store.failing is not None
    filler.unlink()
    store.close(timeout=30.0)
    with sqlite3.connect(tiny_disk / "r.sqlite") as db:
        ids = [r[0] for r in db.execute("SELECT part_id FROM parts ORDER BY rowid")]
    assert ids == list(range(1, 3001)) and store.lost == 0
