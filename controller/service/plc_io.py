"""The PLC I/O loop: the `plc-io` thread that owns the PLC link.

Once per PLC cycle it reads the whole input area (and the trigger ring, a second request),
posts it to the event loop and writes the cell's header. Between reads it writes queued
verdicts, one a turn, each batch of them made durable in the verdict journal first (one sync).
While the journal cannot be written, PASS verdicts not in it are withheld: the PLC rejects
those parts for want of a verdict. It reconnects with a growing pause after a failed connect
and after any error (the link is closed first). It talks to the rest of the cell only through
callbacks posted to the event loop, and publishes LinkUp and LinkDown to the event outlet
(which never blocks) as the link comes and goes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from controller.contract import Verdict
from controller.core.cell import WriteVerdict
from controller.core.types import PartTrack
from controller.events import Event, LinkDown, LinkUp
from controller.interfaces import PlcLink

log = logging.getLogger("controller.service")

#: Parts remembered as journaled: far more than are ever in flight.
JOURNALED_KEPT = 4096


class Journal(Protocol):
    """The verdict journal (`VerdictJournal`): entries made durable in one sync."""

    def append(self, entries: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class JournalStore(Protocol):
    """Where verdicts are journaled (`RecordStore`): its journal (None: none) and its entries."""

    @property
    def journal(self) -> Journal | None: ...

    def journal_entry(self, t: PartTrack, images_kept: bool) -> dict[str, Any]: ...

    def make_room(self) -> None: ...


class PlcIo:
    """The `plc-io` thread. Callbacks run on the event loop given to `start`:
    `on_inputs(snap, t, round_trip, triggers)`, `on_written(part_id, t)`,
    `on_link_lost(why)` and `on_journal_synced(seconds)`."""

    def __init__(
        self,
        link: PlcLink,
        store: JournalStore,
        cycle_s: float,
        trigger_ring: bool,
        queue_size: int,
        header: bytes,
        on_inputs: Callable[[np.void, float, float, np.void | None], None],
        on_written: Callable[[int, float], None],
        on_link_lost: Callable[[str], None],
        on_journal_synced: Callable[[float], None],
        publish: Callable[[Event], None] | None = None,
    ) -> None:
        """`publish` gets LinkUp and LinkDown as the link comes and goes (on this thread)."""
        self.link, self.store = link, store
        self.cycle_s, self.trigger_ring = cycle_s, trigger_ring
        self._on_inputs, self._on_written = on_inputs, on_written
        self._on_link_lost, self._on_journal_synced = on_link_lost, on_journal_synced
        # Verdicts to write: the verdict, its part (for the journal) and whether its images are kept.
        self._verdicts: queue.Queue[tuple[WriteVerdict, PartTrack | None, bool]] = queue.Queue(
            maxsize=queue_size
        )
        self._unwritten: deque[WriteVerdict] = deque()  # plc-io's: journaled, not yet written
        self._journaled: OrderedDict[tuple[int, int], None] = OrderedDict()  # plc-io's: (epoch, part)
        #: Why the verdict journal cannot be written (None while it can).
        self.journal_failing: str | None = None
        self._header = header
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="plc-io", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The link is connected (set by the thread).
        self.link_up = False
        self._progress = 0
        self._publish = publish
        self._announced: bool | None = None  # the link state last published (None: none yet)

    # ------------------------------------------------------- the loop's side
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def queue_verdict(self, verdict: WriteVerdict, track: PartTrack | None, images_kept: bool) -> bool:
        """Queue a verdict to write (never blocks); False when the queue is full."""
        try:
            self._verdicts.put_nowait((verdict, track, images_kept))
        except queue.Full:
            return False
        return True

    def set_header(self, header: bytes) -> None:
        """The header written from the next cycle on."""
        self._header = header

    def drained(self) -> bool:
        """Every queued verdict has been written."""
        return self._verdicts.empty() and not self._unwritten

    @property
    def progress(self) -> int:
        """PLC cycles handled without error and reconnect attempts (see `count_progress`)."""
        return self._progress

    def count_progress(self) -> None:
        """One more PLC cycle handled, or reconnect attempt (on the loop: a frozen loop stops it)."""
        self._progress += 1

    # ------------------------------------------------------------- plc-io
    def _main(self) -> None:
        try:
            self._run()
        finally:
            if self.store.journal is not None:
                self.store.journal.close()

    def _run(self) -> None:
        cycle = self.cycle_s
        backoff = 0.1
        next_read = time.monotonic()
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            if not self.link_up:
                try:
                    self.link.connect()
                except Exception as exc:
                    loop.call_soon_threadsafe(self.count_progress)
                    if backoff == 0.1:
                        log.error("PLC link down: %s", exc)  # once, then quietly until it recovers
                    self._announce(LinkDown(f"connect failed: {exc}"))
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                log.info("PLC link up: %r", self.link)
                self.link_up, backoff = True, 0.1
                self._announce(LinkUp(f"connected to {self.link}"))
            try:
                now = time.monotonic()
                if now >= next_read:
                    t0 = time.monotonic()
                    snap = self.link.read_inputs()
                    t1 = time.monotonic()
                    # The trigger ring is its own area: a second request, after the parts.
                    trig = self.link.read_triggers() if self.trigger_ring else None
                    loop.call_soon_threadsafe(self._on_inputs, snap, (t0 + t1) / 2, t1 - t0, trig)
                    self.link.write_header(self._header)
                    next_read = max(next_read + cycle, now)
                if self._unwritten:  # one write per turn: the next read is never late for a batch
                    w = self._unwritten.popleft()
                    self.link.write_verdict(w.part_id, w.verdict, int(w.reason), w.attempt, w.sensor_count)
                    loop.call_soon_threadsafe(self._on_written, w.part_id, time.monotonic())
                    continue
                try:
                    first = self._verdicts.get(timeout=max(0.0, next_read - time.monotonic()))
                except queue.Empty:
                    continue
                self._unwritten.extend(self._journal_batch(first))
            except Exception as exc:
                log.error("PLC link lost: %s", exc)
                self.link.close()
                self.link_up = False
                self._announce(LinkDown(str(exc)))
                loop.call_soon_threadsafe(self._on_link_lost, str(exc))

    def _announce(self, event: LinkUp | LinkDown) -> None:
        """Publish a change of the link's state (a failed reconnect after a loss is no news)."""
        up = isinstance(event, LinkUp)
        if self._publish is not None and up is not self._announced:
            self._announced = up
            self._publish(event)

    def _journal_batch(self, first: tuple[WriteVerdict, PartTrack | None, bool]) -> list[WriteVerdict]:
        """Take every queued verdict, journal those of parts not journaled yet with one sync, and
        return the verdicts to write. While the journal cannot be written, PASS verdicts that are
        not in it are withheld: the PLC rejects those parts (no verdict)."""
        batch = [first]
        while len(batch) < self._verdicts.maxsize:
            try:
                batch.append(self._verdicts.get_nowait())
            except queue.Empty:
                break
        journal = self.store.journal
        new: list[tuple[int, int]] = []
        entries = []
        for w, track, kept in batch:
            if track is not None and (key := (track.epoch, w.part_id)) not in self._journaled:
                new.append(key)
                entries.append(self.store.journal_entry(track, kept))
        if not entries or journal is None:
            return [w for w, _, _ in batch]
        t0 = time.monotonic()
        try:
            journal.append(entries)
        except OSError as exc:
            if self.journal_failing is None:
                log.error("verdict journal cannot be written: %s (PASS verdicts withheld)", exc)
            self.journal_failing = f"verdict journal cannot be written: {exc}"
            if exc.errno == errno.ENOSPC:
                self.store.make_room()
            failed = set(new)
            return [
                w
                for w, track, _ in batch
                if w.verdict is not Verdict.PASS or track is None or (track.epoch, w.part_id) not in failed
            ]
        took = time.monotonic() - t0
        if self.journal_failing is not None:
            log.info("verdict journal: writing again")
            self.journal_failing = None
        for key in new:
            self._journaled[key] = None
        while len(self._journaled) > JOURNALED_KEPT:
            self._journaled.popitem(last=False)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_journal_synced, took)
        return [w for w, _, _ in batch]
