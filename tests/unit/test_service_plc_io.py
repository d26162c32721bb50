"""The PLC I/O loop on its own: an in-memory PLC link and verdict journal, a real `plc-io` thread."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from controller.contract import Verdict
from controller.core.cell import WriteVerdict
from controller.core.types import PartTrack, ReasonCode
from controller.events import Event, LinkDown, LinkUp
from controller.service.plc_io import PlcIo

CYCLE_S = 0.002
_AREA = np.zeros(1, dtype=[("heartbeat", "<u2")])


class MemoryLink:
    """A PLC link in memory; every call is logged in `calls`. `connect_failures` connects fail
    first; reads listed in `failing_reads` (1-based) raise."""

    def __init__(self, connect_failures: int = 0, failing_reads: Sequence[int] = ()) -> None:
        self.connect_failures, self.failing_reads = connect_failures, set(failing_reads)
        self.calls: list[tuple[Any, ...]] = []
        self.connects = self.closes = self.reads = 0

    def connect(self) -> None:
        self.connects += 1
        self.calls.append(("connect",))
        if self.connects <= self.connect_failures:
            raise ConnectionRefusedError("connection refused")

    def close(self) -> None:
        self.closes += 1
        self.calls.append(("close",))

    def read_inputs(self) -> np.void:
        self.reads += 1
        self.calls.append(("read",))
        if self.reads in self.failing_reads:
            raise OSError("read timed out")
        return _AREA[0]

    def read_triggers(self) -> np.void:
        self.calls.append(("triggers",))
        return _AREA[0]

    def write_header(self, data: bytes) -> None:
        self.calls.append(("header", data))

    def write_verdict(self, part_id: int, verdict: Verdict, reason: int, attempt: int, count: int) -> None:
        self.calls.append(("verdict", part_id, verdict, attempt))

    def written(self) -> list[tuple[int, Verdict, int]]:
        return [c[1:] for c in self.calls if c[0] == "verdict"]


class MemoryJournal:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls
        self.failure: OSError | None = None
        self.closed = False

    def append(self, entries: Sequence[dict[str, Any]]) -> None:
        if self.failure is not None:
            raise self.failure
        self.calls.append(("journal", tuple(e["part_id"] for e in entries)))

    def close(self) -> None:
        self.closed = True


class MemoryStore:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.journal = MemoryJournal(calls)
        self.room_wanted = 0

    def journal_entry(self, t: PartTrack, images_kept: bool) -> dict[str, Any]:
        return {"part_id": t.part_id, "images_kept": images_kept}

    def make_room(self) -> None:
        self.room_wanted += 1


class Rig:
    """A `PlcIo` with its callbacks recorded (they run on the event loop)."""

    def __init__(self, link: MemoryLink, queue_size: int = 16, trigger_ring: bool = False) -> None:
        self.link = link
        self.store = MemoryStore(link.calls)
        self.inputs: list[tuple[float, float, np.void | None]] = []
        self.written: list[int] = []
        self.lost: list[str] = []
        self.syncs: list[float] = []
        self.events: list[Event] = []
        self.io = PlcIo(
            link, self.store, CYCLE_S, trigger_ring, queue_size, b"h0",
            on_inputs=lambda snap, t, rt, trig: self.inputs.append((t, rt, trig)),
            on_written=lambda part_id, t: self.written.append(part_id),
            on_link_lost=self.lost.append, on_journal_synced=self.syncs.append,
            publish=self.events.append,
        )  # fmt: skip

    def verdict(self, part_id: int, verdict: Verdict, attempt: int = 1, kept: bool = False) -> bool:
        track = PartTrack(part_id, part_id * 10, 0, 0.0, inspected=True, verdict=verdict)
        return self.io.queue_verdict(WriteVerdict(part_id, verdict, ReasonCode.NONE, attempt), track, kept)


async def until(check: Callable[[], bool], timeout: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def run_io(rig: Rig, body: Callable[[], Any]) -> None:
    """Start the thread on a fresh loop, run `body` (a coroutine function), stop and join."""

    async def go() -> None:
        rig.io.start(asyncio.get_running_loop())
        try:
            await body()
        finally:
            rig.io.stop()
            await asyncio.to_thread(rig.io.join, 2.0)
        assert not rig.io.is_alive()

    asyncio.run(asyncio.wait_for(go(), 5.0))


def test_a_failed_connect_is_retried_and_counts_as_progress(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(MemoryLink(connect_failures=1))

    async def body() -> None:
        await until(lambda: rig.io.link_up and len(rig.inputs) >= 3)
        assert rig.link.connects == 2
        assert rig.io.progress == 1  # the reconnect attempt, counted on the loop

    with caplog.at_level(logging.INFO, logger="controller.service"):
        run_io(rig, body)
    messages = [r.getMessage() for r in caplog.records]
    assert "PLC link down: connection refused" in messages
    assert any(m.startswith("PLC link up: ") for m in messages)
    assert rig.store.journal.closed  # the thread closes the journal when it ends


def test_a_read_error_closes_the_link_and_reconnects() -> None:
    rig = Rig(MemoryLink(failing_reads=[3]))

    async def body() -> None:
        await until(lambda: rig.lost != [] and len(rig.inputs) >= 4)
        assert rig.lost == ["read timed out"]
        assert rig.io.link_up and rig.link.connects == 2 and rig.link.closes == 1
        calls = [c[0] for c in rig.link.calls]
        failed = [i for i, c in enumerate(calls) if c == "read"][2]
        assert calls[failed + 1 : failed + 3] == ["close", "connect"]  # closed before connecting again

    run_io(rig, body)


def test_the_link_coming_and_going_is_published_once_per_change() -> None:
    rig = Rig(MemoryLink(connect_failures=2, failing_reads=[3]))

    async def body() -> None:
        await until(lambda: rig.lost != [] and rig.io.link_up and len(rig.inputs) >= 4)

    run_io(rig, body)
    assert [type(e) for e in rig.events] == [LinkDown, LinkUp, LinkDown, LinkUp]  # two failed connects: one
    assert rig.events[0] == LinkDown("connect failed: connection refused")
    assert rig.events[2] == LinkDown("read timed out")
    # Up says to what, in words a plant reads (not a Python repr).
    up = rig.events[1]
    assert isinstance(up, LinkUp) and up.why == f"connected to {rig.io.link}"


def test_each_cycle_reads_inputs_then_triggers_then_writes_the_header() -> None:
    rig = Rig(MemoryLink(), trigger_ring=True)

    async def body() -> None:
        await until(lambda: len(rig.inputs) >= 3)
        rig.io.set_header(b"h1")
        seen = len(rig.link.calls)
        await until(lambda: any(c == ("header", b"h1") for c in rig.link.calls[seen:]))
        assert all(trig is not None for _, _, trig in rig.inputs)

    run_io(rig, body)
    calls = [c for c in rig.link.calls if c[0] != "connect"]
    reads = [i for i, c in enumerate(calls) if c[0] == "read"]
    for i in reads[:-1]:  # the last cycle may have been cut short by the stop
        assert calls[i + 1][0] == "triggers" and calls[i + 2][0] == "header", calls[i : i + 3]
    headers = [c[1] for c in calls if c[0] == "header"]
    assert headers[0] == b"h0" and headers[-1] == b"h1"
    assert headers == sorted(headers)  # h0 until it changed, h1 after


def test_a_verdict_is_journaled_once_and_written_after_its_journal_entry() -> None:
    rig = Rig(MemoryLink())

    assert rig.verdict(7, Verdict.FAIL, kept=True) and rig.verdict(8, Verdict.PASS)  # queued before it runs

    async def body() -> None:
        await until(lambda: rig.written == [7, 8])
        assert rig.verdict(7, Verdict.FAIL, attempt=2)  # a repeat: written again, not journaled again
        await until(lambda: rig.written == [7, 8, 7])
        await until(rig.io.drained)

    run_io(rig, body)
    journal = [c for c in rig.link.calls if c[0] == "journal"]
    assert journal == [("journal", (7, 8))]  # one sync for the batch
    order = [c[:2] for c in rig.link.calls if c[0] in ("journal", "verdict")]
    assert order == [("journal", (7, 8)), ("verdict", 7), ("verdict", 8), ("verdict", 7)]
    assert rig.link.written() == [(7, Verdict.FAIL, 1), (8, Verdict.PASS, 1), (7, Verdict.FAIL, 2)]
    assert len(rig.syncs) == 1 and rig.io.journal_failing is None


def test_pass_is_withheld_while_the_journal_fails_and_written_once_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(MemoryLink())
    rig.store.journal.failure = OSError(errno.ENOSPC, "No space left on device")
    assert rig.verdict(1, Verdict.PASS) and rig.verdict(2, Verdict.FAIL)  # one batch

    async def body() -> None:
        await until(lambda: rig.written == [2])  # the FAIL goes out: the PLC rejects either way
        await until(rig.io.drained)
        assert rig.io.journal_failing is not None and "No space left" in rig.io.journal_failing
        assert rig.store.room_wanted == 1  # a full disk: the store is asked to make room
        await asyncio.sleep(5 * CYCLE_S)
        assert rig.written == [2]  # the PASS never went out
        rig.store.journal.failure = None
        assert rig.verdict(1, Verdict.PASS, attempt=2)  # the core repeats an unacknowledged verdict
        await until(lambda: rig.written == [2, 1])

    with caplog.at_level(logging.INFO, logger="controller.service"):
        run_io(rig, body)
    assert rig.io.journal_failing is None
    assert [c for c in rig.link.calls if c[0] == "journal"] == [("journal", (1,))]
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "PASS verdicts withheld" in m] == [
        "verdict journal cannot be written: [Errno 28] No space left on device (PASS verdicts withheld)"
    ]
    assert "verdict journal: writing again" in messages


def test_a_full_verdict_queue_refuses_and_never_blocks() -> None:
    rig = Rig(MemoryLink(), queue_size=2)  # not started: nothing takes from the queue
    assert rig.io.drained()
    assert rig.verdict(1, Verdict.PASS) and rig.verdict(2, Verdict.PASS)
    assert not rig.verdict(3, Verdict.FAIL)
    assert not rig.io.drained()
