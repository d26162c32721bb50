"""The MQTT publisher's disk queue: ordered, numbered, bounded by size and age, kept across restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.plant.spool import Spool


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def body(n: int = 10) -> object:
    return lambda seq: f"{seq:0{n}d}".encode()


def test_messages_come_out_in_order_with_rising_numbers_and_go_once_acknowledged(tmp_path: Path) -> None:
    s = Spool(tmp_path / "q.sqlite", 10_000, 3600)
    seqs = [s.append("t/part", False, lambda seq: f"m{seq}".encode()) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5] and s.depth == 5 and s.size == 10
    out = s.peek(0, 3)
    assert [(m.seq, m.payload) for m in out] == [(1, b"m1"), (2, b"m2"), (3, b"m3")]
    assert [m.seq for m in s.peek(3, 10)] == [4, 5]
    assert s.remove([1, 2, 2, 99]) == 2
    assert [m.seq for m in s.peek(0, 10)] == [3, 4, 5] and s.depth == 3
    s.close()


def test_the_stream_and_its_numbers_survive_a_restart_and_never_repeat(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    s = Spool(path, 10_000, 3600)
    stream = s.stream
    for _ in range(3):
        s.append("t", True, lambda seq: b"x")
    s.remove([1, 2, 3])
    s.close()
    s = Spool(path, 10_000, 3600)
    assert s.stream == stream and s.depth == 0 and s.last_seq == 3
    assert s.append("t", True, lambda seq: b"y") == 4
    m = s.peek(0, 1)[0]
    assert m.retain and m.topic == "t"
    s.close()
    assert Spool(tmp_path / "other.sqlite", 10, 1).stream != stream


def test_full_the_oldest_go_first_and_are_counted(tmp_path: Path) -> None:
    s = Spool(tmp_path / "q.sqlite", 100, 3600, sync="normal")
    for _ in range(25):
        s.append("t", False, body())
    assert s.size <= 100 and s.depth == 10 and s.dropped == 15
    assert [m.seq for m in s.peek(0, 100)] == list(range(16, 26))
    assert s.append("t", False, lambda seq: b"z" * 101) == 0  # alone over the limit: dropped
    assert s.dropped == 16 and s.last_seq == 25
    s.close()


def test_too_old_messages_are_dropped_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    s = Spool(tmp_path / "q.sqlite", 10_000, 60, clock=clock)
    s.append("t", False, body())
    clock.t += 30
    s.append("t", False, body())
    clock.t += 40
    assert s.expire() == 1 and s.dropped == 1
    assert [m.seq for m in s.peek(0, 10)] == [2]
    s.close()
    clock.t += 100  # what is too old on opening goes at once
    s = Spool(tmp_path / "q.sqlite", 10_000, 60, clock=clock)
    assert s.depth == 0 and s.dropped == 1
    s.close()


def test_a_file_it_cannot_open_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("not a folder")
    with pytest.raises(ValueError, match=r"spool .*f/q\.sqlite"):
        Spool(tmp_path / "f" / "q.sqlite", 100, 60)
    with pytest.raises(ValueError, match="must be positive"):
        Spool(tmp_path / "q.sqlite", 0, 60)


def test_expiry_finds_old_messages_by_an_index_not_a_full_scan(tmp_path: Path) -> None:
    s = Spool(tmp_path / "q.sqlite", 10_000, 3600)
    plan = s._db.execute("EXPLAIN QUERY PLAN DELETE FROM queue WHERE created < ?", (0.0,)).fetchall()
    assert any("USING INDEX" in str(row[-1]) or "USING COVERING INDEX" in str(row[-1]) for row in plan), plan
    s.close()


class _CommitFails:
    """A connection whose COMMIT fails after SQLite already rolled back (a disk I/O error)."""

    def __init__(self, db: object) -> None:
        self.db = db

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def execute(self, sql: str, *args: object) -> object:
        if sql == "COMMIT":
            self.db.execute("ROLLBACK")  # type: ignore[attr-defined]
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)  # type: ignore[attr-defined]


def test_a_failed_commit_raises_its_own_error_not_a_rollback_error(tmp_path: Path) -> None:
    s = Spool(tmp_path / "q.sqlite", 10_000, 3600)
    s.append("t", False, body())
    real = s._db
    s._db = _CommitFails(real)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        s.append("t", False, body())
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        s.remove([1])
    s._db = real
    assert s.depth == 1 and [m.seq for m in s.peek(0, 10)] == [1]
    s.close()


def test_appends_stay_synced_after_a_removal_and_an_expiry(tmp_path: Path) -> None:
    # Removals commit unsynced (a message the power cut brings back is sent again); appends,
    # the messages not yet delivered, must still be synced after them.
    s = Spool(tmp_path / "q.sqlite", 10_000, 3600, sync="full")
    s.remove([s.append("t", False, body())])
    s.expire()
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.append("t", False, body())
    s.close()
    with sqlite3.connect(tmp_path / "q.sqlite") as db:
        assert db.execute("SELECT seq FROM queue").fetchall() == [(2,)]
