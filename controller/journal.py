"""The verdict journal: each verdict made durable (one fdatasync per batch) before the PLC gets it.

Records are written when the PLC reports a part's disposition, about a belt length after its
verdict. A crash (kill -9, power loss) in between would leave parts that the PLC passed on an
accepted verdict without a record. So the `plc-io` thread appends every batch of verdicts it
is about to write for the first time to this journal, one JSON line per part, and syncs it
once; only then does the PLC get them. At the next start the record store replays the journal:
every part without a row gets one from its line, its disposition marked missing.

The journal is a folder of segment files, `<run id>.<n>.jsonl`, one open at a time. A segment
is closed after `segment_entries` lines; the record store deletes closed segments once every
part in them has its row, and replays (then deletes) whatever is left at the next start.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class VerdictJournal:
    """Append-only, synced segments of verdict lines. `append` is called by one thread (plc-io);
    `closed_segments`/`forget` by the record store's thread."""

    def __init__(self, folder: Path, run_id: str, segment_entries: int = 2000) -> None:
        self.folder, self.run_id, self.segment_entries = folder, run_id, segment_entries
        self._fd: int | None = None
        self._path: Path | None = None
        self._index = 0
        self._entries = 0  # lines in the open segment
        self._size = 0  # bytes in the open segment known to be whole lines
        self._closed: list[Path] = []
        self._lock = threading.Lock()  # guards _closed
        self.appended = 0
        self.syncs = 0

    def append(self, entries: Sequence[dict[str, Any]]) -> None:
        """Write `entries` as lines and sync them to disk. Raises OSError when they are not durable
        (then the segment holds none of them: a partial write is cut off again)."""
        if not entries:
            return
        data = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in entries)
        fd = self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        except OSError:
            self._cut_back(fd)
            raise
        self._size += len(data)
        self._entries += len(entries)
        self.appended += len(entries)
        self.syncs += 1
        if self._entries >= self.segment_entries:
            self._close_segment()

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index += 1
        path = self.folder / f"{self.run_id}.{self._index:06d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            _sync_folder(self.folder)  # the new file's name is durable too
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self._path, self._entries, self._size = fd, path, 0, 0
        return fd

    def _cut_back(self, fd: int) -> None:
        """A failed append: drop its partial line so the next one starts on a whole line."""
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            self._close_segment()  # the next append opens a fresh segment

    def _close_segment(self) -> None:
        if self._fd is None:
            return
        try:
            os.close(self._fd)
        except OSError as exc:
            log.warning("verdict journal %s: close: %s", self._path, exc.strerror)
        with self._lock:
            if self._path is not None:
                self._closed.append(self._path)
        self._fd, self._path = None, None

    def close(self) -> None:
        """No more appends in this run: the open segment is closed (the store may delete it)."""
        self._close_segment()

    def closed_segments(self) -> list[Path]:
        with self._lock:
            return list(self._closed)

    def forget(self, path: Path) -> None:
        """The store deleted `path`: every part in it has its row."""
        with self._lock:
            if path in self._closed:
                self._closed.remove(path)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segment(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The whole lines of a segment, and how many lines were torn or unreadable (skipped).

    A torn last line is a batch whose sync never finished: its verdicts never reached the PLC.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    bad = 1 if lines[-1] else 0  # no newline at the end: torn by the crash
    entries: list[dict[str, Any]] = []
    for line in lines[:-1]:
        try:
            e = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(e, dict) and isinstance(e.get("run_id"), str) and isinstance(e.get("part_id"), int):
            entries.append(e)
        else:
            bad += 1
    return entries, bad
