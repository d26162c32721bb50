"""The record store: one row per part in SQLite (WAL), images of rejected parts on disk.

A named writer thread owns the connection and commits in small batches; the control loop only
enqueues. Rows are never dropped for lack of room: the queue is large and a full one makes the
caller wait briefly and raises an alarm counter, since a lost record breaks traceability.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from controller.core.types import PartTrack

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
    alarms TEXT, recipe_hash TEXT, model_hash TEXT, images TEXT,
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


def _round(t: float | None) -> float | None:
    return None if t is None else round(t, 6)


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RecordStore:
    """Writes part records and alarms from its own thread."""

    def __init__(self, database: Path, images: Path, run_id: str, queue_size: int = 20_000) -> None:
        self.database, self.images_dir, self.run_id = database, images, run_id
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

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.waits += 1
            self._queue.put(item, timeout=5.0)

    def close(self) -> None:
        """Flush everything queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout=30.0)

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.database, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            self._error = RuntimeError(f"record store {self.database}: {exc}")
            self._ready.set()
            return
        self._ready.set()
        done = False
        while not done:
            item = self._queue.get()
            batch = [item]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                db.execute("BEGIN")
                for it in batch:
                    if it is None:
                        done = True
                        continue
                    self._write(db, *it)
                db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                self.errors += 1
                log.error("record store: %s", exc)
                if db.in_transaction:
                    db.execute("ROLLBACK")
        db.close()

    def _write(self, db: sqlite3.Connection, kind: str, payload: Any) -> None:
        if kind == "run":
            m = payload
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
            db.execute("INSERT OR REPLACE INTO parts VALUES (" + ",".join("?" * 27) + ")", self._row(payload))
            self.written += 1

    def _row(self, rec: PartRecord) -> tuple[Any, ...]:
        t = rec.track
        paths = self._save_images(t.part_id, rec.images)
        views = {
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
        last = t.last_trigger
        latency = (t.t_first_write - last) * 1e3 if last is not None and t.t_first_write is not None else None
        return (
            self.run_id, t.part_id, _utc(), t.sensor_count, t.sensor_pos, int(t.inspected),
            t.verdict.name, t.reason.name.lower(), json.dumps(t.reasons), json.dumps(views),
            _round(t.t_registered), _round(last), _round(t.t_fused), _round(t.t_first_write),
            _round(t.t_acked), _round(t.t_disposition), latency, t.attempts, t.ack.name,
            None if t.kicked is None else int(t.kicked),
            None if t.confirmed_removed is None else int(t.confirmed_removed),
            t.plc_cause, None if t.expected_kick is None else int(t.expected_kick),
            json.dumps(t.alarms),
            t.plan.recipe_hash if t.plan is not None else self.recipe_hash,
            t.plan.model_hash if t.plan is not None else self.model_hash,
            json.dumps(paths),
        )  # fmt: skip

    def _save_images(self, part_id: int, images: dict[str, np.ndarray]) -> list[str]:
        paths: list[str] = []
        if not images:
            return paths
        folder = self.images_dir / self.run_id
        folder.mkdir(parents=True, exist_ok=True)
        for cam, img in images.items():
            p = folder / f"{part_id:08d}_{cam}.png"
            Image.fromarray(img).save(p, compress_level=1)
            paths.append(str(p))
        return paths
