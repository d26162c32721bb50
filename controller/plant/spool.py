"""The MQTT publisher's disk queue: messages in order, kept until the broker acknowledged them.

One SQLite file (WAL). Each message gets the next sequence number of the file's stream (a
random id made when the file is created): `seq` rises by one per message and is never reused,
so a consumer can drop duplicates and see gaps. Bounded by the payload bytes it holds and by
age; the oldest go first, and each one dropped is counted. Thread-safe: the outlet's delivery
thread appends, the publisher's thread reads and removes.

Durability (`sync`): "full" syncs every append to disk before it returns; "normal" survives a
crash of the process but a power cut may take the last appends (SQLite's WAL with
synchronous=NORMAL). Either way the record store keeps every part; the spool is for delivery.
Removals and expiry are never synced on their own (the next synced append, or a checkpoint,
takes them to disk): one a power cut undoes only sends a message again, which delivery at
least once allows, and it saves the disk one sync a part.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    topic TEXT NOT NULL,
    retain INTEGER NOT NULL,
    payload BLOB NOT NULL
);
-- expire() deletes by age each second: without it, a full scan of a large spool under the lock.
CREATE INDEX IF NOT EXISTS queue_created ON queue (created);
"""
_FORMAT = "1"


@dataclass(frozen=True, slots=True)
class Spooled:
    """One queued message."""

    seq: int
    topic: str
    payload: bytes
    retain: bool


class Spool:
    """A bounded, ordered disk queue of MQTT messages; open it, `append`, `peek`, `remove`.

    `max_bytes` and `max_age_s` bound what it holds; `clock` is the wall clock of `created`."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        max_age_s: float,
        sync: Literal["full", "normal"] = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 1 or max_age_s <= 0:
            raise ValueError(f"spool {path}: max_bytes and max_age_s must be positive")
        self.path, self.max_bytes, self.max_age_s, self._clock = path, max_bytes, max_age_s, clock
        self._sync = sync.upper()
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={self._sync}")
            self._db.executescript(_SCHEMA)
            self.stream = self._meta("stream", uuid.uuid4().hex)
            fmt = self._meta("format", _FORMAT)
            if fmt != _FORMAT:
                raise ValueError(f"spool {path}: format {fmt}, this version reads {_FORMAT}")
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
            self._last_seq: int = row[0] if row else 0
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM queue"
            ).fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"spool {path}: {exc}") from None
        self._count, self._bytes = int(count), int(size)
        self.dropped = 0  # since open: too old, or pushed out by newer ones
        self.expire()

    def _meta(self, key: str, default: str) -> str:
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, default))
        value: str = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
        return value

    # ---------------------------------------------------------------- figures
    @property
    def depth(self) -> int:
        """Messages queued."""
        return self._count

    @property
    def size(self) -> int:
        """Payload bytes queued."""
        return self._bytes

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest message appended (0: none yet)."""
        return self._last_seq

    # ------------------------------------------------------------ operations
    def append(self, topic: str, retain: bool, payload: Callable[[int], bytes]) -> int:
        """Queue one message; `payload(seq)` makes its body for its sequence number (the body
        carries it). Makes room by dropping the oldest. Returns the sequence number (0: the
        message alone is over the size limit, and was dropped)."""
        with self._lock:
            seq = self._last_seq + 1
            body = payload(seq)
            if len(body) > self.max_bytes:  # could never be queued: dropped, its number not spent
                self.dropped += 1
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._trim(self.max_bytes - len(body))
                self._db.execute(
                    "INSERT INTO queue (seq, created, topic, retain, payload) VALUES (?, ?, ?, ?, ?)",
                    (seq, self._clock(), topic, int(retain), body),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._last_seq = seq
            self._count += 1 - dropped[0]
            self._bytes += len(body) - dropped[1]
            self.dropped += dropped[0]
            return seq

    def _trim(self, room: int) -> tuple[int, int]:
        """Delete the oldest until at most `room` payload bytes are queued (in a transaction)."""
        count = size = 0
        while self._bytes - size > room:
            rows = self._db.execute(
                "DELETE FROM queue WHERE seq = (SELECT min(seq) FROM queue) RETURNING length(payload)"
            ).fetchall()
            if not rows:
                break
            count += len(rows)
            size += sum(r[0] for r in rows)
        return count, size

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not already (a failed COMMIT may have), so
        the error that got here is the one raised; then count again what is queued."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._recount()

    def _recount(self) -> None:
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM queue"
        ).fetchone()
        self._count, self._bytes = int(count), int(size)

    def peek(self, after: int, limit: int) -> list[Spooled]:
        """Up to `limit` queued messages with a sequence number above `after`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, retain FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Spooled(seq, topic, bytes(payload), bool(retain)) for seq, topic, payload, retain in rows]

    def remove(self, seqs: Iterable[int]) -> int:
        """Remove delivered messages (those already gone are skipped). Returns how many went."""
        keys = [(s,) for s in seqs]
        if not keys:
            return 0
        with self._lock, self._unsynced():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                gone = [
                    row
                    for key in keys
                    for row in self._db.execute(
                        "DELETE FROM queue WHERE seq = ? RETURNING length(payload)", key
                    )
                ]
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._count -= len(gone)
            self._bytes -= sum(r[0] for r in gone)
            return len(gone)

    def expire(self) -> int:
        """Drop what is older than the age limit; returns how many went."""
        with self._lock, self._unsynced():
            rows = self._db.execute(
                "DELETE FROM queue WHERE created < ? RETURNING length(payload)",
                (self._clock() - self.max_age_s,),
            ).fetchall()
            self._count -= len(rows)
            self._bytes -= sum(r[0] for r in rows)
            self.dropped += len(rows)
            return len(rows)

    @contextlib.contextmanager
    def _unsynced(self) -> Iterator[None]:
        """Commit without a sync of its own (see the module docstring); appends sync again."""
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            if self._db.in_transaction:  # a failed rollback: SQLite refuses the setting inside one
                self._db.close()  # appends must never go on unsynced: the spool fails instead
            else:
                self._db.execute(f"PRAGMA synchronous={self._sync}")

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["Spool", "Spooled"]
