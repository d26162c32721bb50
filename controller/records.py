"""The record store: one row per part in SQLite (WAL), images of rejected parts on disk.

A named writer thread owns the connection and commits in small batches; the control loop only
enqueues. Rows are never dropped for lack of room: the queue is large and a full one makes the
caller wait briefly and raises an alarm counter, since a lost record breaks traceability.

Images are saved before their batch's transaction, each on its own: an image that cannot be
saved (disk full, folder read-only, no file handles) leaves its row saying so in `image_error`,
never the row itself lost. A batch whose rows cannot be committed is kept and retried, its
images deleted meanwhile (no orphans), and `failing` says why, so the service can stop passing
parts it cannot record. On a full disk the oldest images are deleted first to make room.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from controller.core.types import PartTrack
from controller.journal import VerdictJournal, read_segment

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_utc TEXT, cell TEXT, cell_hash TEXT,
    recipe TEXT, recipe_hash TEXT, model_hash TEXT, provider TEXT
);
CREATE TABLE IF NOT EXISTS parts (
    run_id TEXT NOT NULL, part_id INTEGER NOT NULL, recorded_utc TEXT NOT NULL,
    sensor_count INTEGER, sensor_pos INTEGER, inspected INTEGER,
    verdict TEXT NOT NULL, reason TEXT, reasons TEXT, views TEXT,
    t_registered REAL, t_last_trigger REAL, t_fused REAL, t_first_write REAL, t_acked REAL,
    t_disposition REAL, latency_ms REAL, attempts INTEGER, ack TEXT,
    kicked INTEGER, confirmed_removed INTEGER, plc_cause INTEGER, expected_kick INTEGER,
    alarms TEXT, recipe_hash TEXT, model_hash TEXT, images TEXT, image_error TEXT,
    PRIMARY KEY (run_id, part_id)
);
CREATE TABLE IF NOT EXISTS audit (
    run_id TEXT, t_utc TEXT, source TEXT, from_recipe TEXT, from_hash TEXT,
    to_recipe TEXT, to_hash TEXT, result TEXT, reason TEXT
);
CREATE TABLE IF NOT EXISTS alarms (
    run_id TEXT, t_utc TEXT, code INTEGER, text TEXT
);
"""


@dataclass
class PartRecord:
    track: PartTrack
    images: dict[str, np.ndarray] = field(default_factory=dict)


#: The columns a journal line carries: what is known once the verdict is made.
JOURNAL_COLUMNS = (
    "run_id", "part_id", "sensor_count", "sensor_pos", "inspected", "verdict", "reason", "reasons",
    "views", "t_registered", "t_last_trigger", "t_fused", "recipe_hash", "model_hash",
)  # fmt: skip
#: The tag in `alarms` of a row replayed from the journal: the PLC's disposition never came.
DISPOSITION_MISSING = "disposition_missing"


def _round(t: float | None) -> float | None:
    return None if t is None else round(t, 6)


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _views(t: PartTrack) -> dict[str, dict[str, Any]]:
    """Per-view stage times and results of one part, as its row's `views` holds them."""
    return {
        cam: {
            "frame_counter": v.frame_counter,
            "t_trigger": _round(v.t_trigger),
            "t_frame": _round(v.t_frame),
            "t_infer_start": _round(v.t_infer_start),
            "t_infer_end": _round(v.t_infer_end),
            "status": v.result.status.value if v.result else None,
            "cause": v.result.cause.name.lower() if v.result else None,
            "scores": list(v.result.scores) if v.result else None,
            "defects": list(v.result.defects) if v.result else None,
            "regions": [list(r) for r in v.result.regions] if v.result and v.result.regions else None,
        }
        for cam, v in t.views.items()
    }


def _sql_value(v: Any) -> Any:
    """A journal value as SQLite takes it (lists and dicts as JSON text)."""
    if v is None or isinstance(v, (int, float, str)):
        return v
    return json.dumps(v)


class RecordStore:
    """Writes part records and alarms from its own thread."""

    def __init__(
        self,
        database: Path,
        images: Path,
        run_id: str,
        queue_size: int = 20_000,
        journal: Path | None = None,
    ) -> None:
        """`journal`: the verdict journal's folder (None: no journal)."""
        self.database, self.images_dir, self.run_id = database, images, run_id
        self.journal = VerdictJournal(journal, run_id) if journal is not None else None
        self.replayed = 0  # rows recovered from a crashed run's journal at start
        self._room_wanted = False  # the journal ran out of disk: the oldest images go first
        self._pruned_at = 0.0
        database.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="records", daemon=True)
        self.written = 0
        self.waits = 0
        self.errors = 0
        self.recipe_hash = ""
        self.model_hash = ""
        self._ready = threading.Event()
        self._error: Exception | None = None
        #: Why rows cannot be committed right now (None while they can): the cell must not pass parts.
        self.failing: str | None = None
        self._overflow: deque[tuple[str, Any] | None] = deque()
        self.overflow_max = 200_000
        self.lost = 0
        self.image_errors = 0
        self.last_image_error = ""
        self.disk_full = False
        self.retry_s = 1.0
        self._stop = threading.Event()
        self._segments: set[str] = set()
        self._run_meta: dict[str, str] = {}

    def prune_images(self, retention_days: int, now: float | None = None) -> int:
        """Delete saved images older than `retention_days`; returns how many were deleted."""
        limit = (now or time.time()) - retention_days * 86400.0
        removed = 0
        if not self.images_dir.is_dir():
            return 0
        for img in self.images_dir.glob("*/*.png"):
            try:
                if img.stat().st_mtime < limit:
                    img.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("image retention: %s: %s", img, exc.strerror)
        for folder in self.images_dir.iterdir():
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed

    def start(self, run_meta: dict[str, str]) -> None:
        self.recipe_hash = run_meta.get("recipe_hash", "")
        self.model_hash = run_meta.get("model_hash", "")
        self._thread.start()
        self._queue.put(("run", run_meta))
        self._ready.wait(10.0)
        if self._error is not None:
            raise self._error

    def put_part(self, record: PartRecord) -> None:
        self._put(("part", record))

    def put_audit(
        self,
        source: str,
        from_recipe: str,
        from_hash: str,
        to_recipe: str,
        to_hash: str,
        result: str,
        reason: str,
    ) -> None:
        """One recipe activation, accepted or refused."""
        self._put(("audit", (_utc(), source, from_recipe, from_hash, to_recipe, to_hash, result, reason)))

    def put_alarm(self, code: int, text: str) -> None:
        self._put(("alarm", (code, text, _utc())))

    def make_room(self) -> None:
        """The disk is full (the verdict journal found out): the writer deletes the oldest images."""
        self.disk_full = self._room_wanted = True

    def _put(self, item: tuple[str, Any] | None) -> None:
        """Never blocks the caller (the control loop). A full queue spills into a bounded
        overflow, kept in order; past that a record is lost, counted and `failing` says so."""
        if not self._overflow:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                self.waits += 1
        if len(self._overflow) >= self.overflow_max and item is not None:
            self.lost += 1
            if self.lost == 1 or self.lost % 1000 == 0:
                log.error("record store: %d records lost: it cannot keep up", self.lost)
            self.failing = f"records lost: {self.lost} (the store cannot keep up)"
            return
        self._overflow.append(item)
        if self.failing is None and item is not None:
            self.failing = "records are queueing up: the store cannot keep up"

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything queued, then stop the writer (a failing store gives up after `timeout`)."""
        self._put(None)
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.database, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            cols = {r[1] for r in db.execute("PRAGMA table_info(parts)")}
            if "image_error" not in cols:  # a database from before the column
                db.execute("ALTER TABLE parts ADD COLUMN image_error TEXT")
        except sqlite3.Error as exc:
            self._error = RuntimeError(f"record store {self.database}: {exc}")
            self._ready.set()
            return
        self._replay(db)
        self._ready.set()
        done = False
        pending: list[tuple[str, Any]] = []  # rows not yet committed (kept across failures)
        while not (done and not pending):
            if not done and len(pending) < 500:
                try:
                    # Block for new work only when nothing waits to be retried or spilled over.
                    wait = self.retry_s if pending else (0.0 if self._overflow else None)
                    first = self._queue.get(timeout=wait)
                except queue.Empty:
                    first = ("", None)
                items = [first]
                while len(pending) + len(items) < 500:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                while self._overflow and len(pending) + len(items) < 500:  # after the queue: in order
                    items.append(self._overflow.popleft())
                done = any(it is None for it in items)
                pending += [it for it in items if it is not None and it[0]]
            if self._room_wanted:
                self._room_wanted = False
                self._make_room()
            if not pending or self._commit(db, pending):
                pending = []
                if time.monotonic() - self._pruned_at > 5.0:
                    self._prune_journal(db)
            elif self._stop.wait(self.retry_s):
                log.error("record store: %d rows could not be written before stopping", len(pending))
                break
        if not pending:
            self._prune_journal(db)
        db.close()

    def _commit(self, db: sqlite3.Connection, items: list[tuple[str, Any]]) -> bool:
        """Save the batch's images, then its rows in one transaction; on failure undo the images."""
        rows = [(kind, self._row(p) if kind == "part" else p) for kind, p in items]
        try:
            db.execute("BEGIN")
            for kind, payload in rows:
                self._write(db, kind, payload)
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for kind, payload in rows:
                if kind == "part":  # no image without its row
                    for p in json.loads(payload[26]):
                        Path(p).unlink(missing_ok=True)
            self.errors += 1
            if "full" in str(exc).lower() or getattr(exc, "errno", None) == errno.ENOSPC:
                self.disk_full = True
                self._make_room()  # the oldest images go before any record does
            if self.failing is None:
                log.error("record store: cannot write %d rows: %s (kept, retrying)", len(rows), exc)
            self.failing = f"records cannot be written: {exc}"
            return False
        for kind, _ in rows:
            self.written += kind == "part"
        if self.failing is not None:
            log.info("record store: writing again")
            self.failing = None
        return True

    def _write(self, db: sqlite3.Connection, kind: str, payload: Any) -> None:
        if kind == "run":
            m = self._run_meta = payload
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                (self.run_id, _utc(), m.get("cell"), m.get("cell_hash"), m.get("recipe"),
                 m.get("recipe_hash"), m.get("model_hash"), m.get("provider")),
            )  # fmt: skip
        elif kind == "audit":
            db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)", (self.run_id, *payload))
        elif kind == "alarm":
            code, text, t = payload
            db.execute("INSERT INTO alarms VALUES (?,?,?,?)", (self.run_id, t, code, text))
        else:
            segment = payload[0]
            if segment != self.run_id and segment not in self._segments:
                # After a PLC restart part ids start again at 1: a segment of the run of its own.
                m = self._run_meta
                db.execute(
                    "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                    (segment, _utc(), m.get("cell"), m.get("cell_hash"), m.get("recipe"),
                     m.get("recipe_hash"), m.get("model_hash"), m.get("provider")),
                )  # fmt: skip
                self._segments.add(segment)
            db.execute("INSERT OR REPLACE INTO parts VALUES (" + ",".join("?" * 28) + ")", payload)

    def segment(self, epoch: int) -> str:
        """The run id records of PLC epoch `epoch` are stored under."""
        return self.run_id if epoch == 0 else f"{self.run_id}+{epoch}"

    def _row(self, rec: PartRecord) -> tuple[Any, ...]:
        t = rec.track
        paths, image_error = self._save_images(self.segment(t.epoch), t.part_id, rec.images)
        views = _views(t)
        last = t.last_trigger
        latency = (t.t_first_write - last) * 1e3 if last is not None and t.t_first_write is not None else None
        return (
            self.segment(t.epoch), t.part_id, _utc(), t.sensor_count, t.sensor_pos, int(t.inspected),
            t.verdict.name, t.reason.name.lower(), json.dumps(t.reasons), json.dumps(views),
            _round(t.t_registered), _round(last), _round(t.t_fused), _round(t.t_first_write),
            _round(t.t_acked), _round(t.t_disposition), latency, t.attempts, t.ack.name,
            None if t.kicked is None else int(t.kicked),
            None if t.confirmed_removed is None else int(t.confirmed_removed),
            t.plc_cause, None if t.expected_kick is None else int(t.expected_kick),
            json.dumps(t.alarms),
            t.plan.recipe_hash if t.plan is not None else self.recipe_hash,
            t.plan.model_hash if t.plan is not None else self.model_hash,
            json.dumps(paths), image_error,
        )  # fmt: skip

    def journal_entry(self, t: PartTrack, images_kept: bool) -> dict[str, Any]:
        """One part's journal line: what its record holds once its verdict is made.

        Built on the plc-io thread from fields that no longer change once a part is decided."""
        return {
            "run_id": self.segment(t.epoch), "part_id": t.part_id, "sensor_count": t.sensor_count,
            "sensor_pos": t.sensor_pos, "inspected": int(t.inspected), "verdict": t.verdict.name,
            "reason": t.reason.name.lower(), "reasons": list(t.reasons), "views": _views(t),
            "t_registered": _round(t.t_registered), "t_last_trigger": _round(t.last_trigger),
            "t_fused": _round(t.t_fused),
            "recipe_hash": t.plan.recipe_hash if t.plan is not None else self.recipe_hash,
            "model_hash": t.plan.model_hash if t.plan is not None else self.model_hash,
            "images_kept": images_kept,
        }  # fmt: skip

    def _replay(self, db: sqlite3.Connection) -> None:
        """Rows for the journaled parts of crashed runs that have none, disposition marked missing."""
        folder = self.journal.folder if self.journal is not None else None
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.glob("*.jsonl")):
            if path.name.startswith(self.run_id + "."):
                continue
            try:
                entries, bad = read_segment(path)
                added = self._insert_replayed(db, entries)
            except (OSError, sqlite3.Error) as exc:
                log.error("verdict journal %s not replayed: %s (kept for the next start)", path, exc)
                continue
            if bad:
                log.warning("verdict journal %s: %d torn or unreadable lines skipped", path.name, bad)
            if added:
                log.warning(
                    "verdict journal %s: %d parts had no record (the cell stopped without flushing): "
                    "recorded with their verdicts, disposition missing",
                    path.name, added,
                )  # fmt: skip
            self.replayed += added
            path.unlink(missing_ok=True)

    def _insert_replayed(self, db: sqlite3.Connection, entries: list[dict[str, Any]]) -> int:
        cols = (*JOURNAL_COLUMNS, "recorded_utc", "ack", "alarms", "images", "image_error")
        sql = f"INSERT OR IGNORE INTO parts ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
        now, missing = _utc(), json.dumps([DISPOSITION_MISSING])
        added = 0
        db.execute("BEGIN")
        try:
            for e in entries:
                values = [_sql_value(e.get(c)) for c in JOURNAL_COLUMNS]
                lost = "lost: the cell stopped before they were saved" if e.get("images_kept") else None
                cur = db.execute(sql, (*values, now, "UNKNOWN", missing, "[]", lost))
                added += cur.rowcount
            for run_id in {str(e["run_id"]) for e in entries}:  # segments after a PLC restart
                db.execute(
                    "INSERT OR IGNORE INTO runs SELECT ?, started_utc, cell, cell_hash, recipe, recipe_hash, "
                    "model_hash, provider FROM runs WHERE run_id = ?",
                    (run_id, run_id.split("+", 1)[0]),
                )
            db.execute("COMMIT")
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise
        return added

    def _prune_journal(self, db: sqlite3.Connection) -> None:
        """Delete the closed journal segments whose parts all have rows."""
        self._pruned_at = time.monotonic()
        if self.journal is None:
            return
        done = []
        for path in self.journal.closed_segments():
            try:
                entries, _ = read_segment(path) if path.exists() else ([], 0)
                keys: dict[str, set[int]] = {}
                for e in entries:
                    keys.setdefault(str(e["run_id"]), set()).add(int(e["part_id"]))
                if all(ids <= self._have(db, run_id, ids) for run_id, ids in keys.items()):
                    done.append(path)
            except (OSError, sqlite3.Error) as exc:
                log.warning("verdict journal %s: not pruned: %s", path.name, exc)
        if not done:
            return
        try:
            # WAL with synchronous=NORMAL survives a crash of the process, not of the machine,
            # until the WAL is synced: sync it before the journal lines go.
            for f in (Path(f"{self.database}-wal"), self.database):
                if f.exists():
                    fd = os.open(f, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        except OSError as exc:
            log.warning("verdict journal: records not synced, nothing pruned: %s", exc)
            return
        for path in done:
            path.unlink(missing_ok=True)
            self.journal.forget(path)

    @staticmethod
    def _have(db: sqlite3.Connection, run_id: str, ids: set[int]) -> set[int]:
        rows = db.execute(
            "SELECT part_id FROM parts WHERE run_id = ? AND part_id BETWEEN ? AND ?",
            (run_id, min(ids), max(ids)),
        )
        return {r[0] for r in rows}

    def _save_images(
        self, segment: str, part_id: int, images: dict[str, np.ndarray]
    ) -> tuple[list[str], str | None]:
        """Save one part's images; on failure none of them, and why (the row says so)."""
        if not images:
            return [], None
        for attempt in (1, 2):
            paths: list[str] = []
            try:
                folder = self.images_dir / segment
                folder.mkdir(parents=True, exist_ok=True)
                for cam, img in images.items():
                    p = folder / f"{part_id:08d}_{cam}.png"
                    paths.append(str(p))
                    Image.fromarray(img).save(p, compress_level=1)
                self.disk_full = False
                return paths, None
            except OSError as exc:
                for saved in paths:
                    Path(saved).unlink(missing_ok=True)
                why = f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {exc.strerror or exc}"
                if exc.errno == errno.ENOSPC and attempt == 1:
                    self.disk_full = True
                    if self._make_room():
                        continue
            self.image_errors += 1
            if self.last_image_error != why:
                log.error("images of part %d not saved: %s (the record says so)", part_id, why)
            self.last_image_error = why
            return [], why
        return [], None

    def _make_room(self, share: float = 0.1) -> bool:
        """Disk full: delete the oldest tenth of the saved images. True if any went."""
        try:
            files = sorted(self.images_dir.glob("*/*.png"), key=lambda f: f.stat().st_mtime)
        except OSError:
            return False
        doomed = files[: max(1, int(len(files) * share))] if files else []
        for f in doomed:
            f.unlink(missing_ok=True)
        if doomed:
            log.warning("disk full: deleted the %d oldest images to make room", len(doomed))
        return bool(doomed)
