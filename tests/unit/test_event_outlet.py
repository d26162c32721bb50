"""The event outlet: publish never blocks or raises; each subscriber has its own queue and thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from controller.events import DEFAULT_QUEUE_SIZE, Event, EventOutlet, LinkDown, LinkUp

WAIT = 2.0  # the most a test waits for a delivery thread (it never needs that long)


@pytest.fixture
def outlet() -> Iterator[EventOutlet]:
    out = EventOutlet(clock=lambda: 1000.0)
    yield out
    out.close(timeout=WAIT)


def ev(i: int) -> LinkDown:
    return LinkDown(str(i))


def whys(events: list[Event]) -> list[int]:
    return [int(e.why) for e in events if isinstance(e, LinkDown)]


class Collector:
    """A subscriber that keeps what it gets; `wait_for(n)` until it has n events."""

    def __init__(self) -> None:
        self.got: list[Event] = []
        self.closed = 0
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.got.append(event)
            self._cond.notify_all()

    def close(self) -> None:
        self.closed += 1

    def wait_for(self, n: int) -> list[Event]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.got) >= n, WAIT), f"{len(self.got)} of {n} events"
            return list(self.got)


class Gate:
    """A subscriber that blocks on each event until opened; `entered` is set at the first."""

    def __init__(self) -> None:
        self.open, self.entered = threading.Event(), threading.Event()
        self.got: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.entered.set()
        self.open.wait(WAIT)
        self.got.append(event)


def test_a_blocked_subscriber_does_not_slow_publish_and_others_get_everything(outlet: EventOutlet) -> None:
    gate, fast = Gate(), Collector()
    outlet.subscribe("slow", gate, queue_size=100)
    outlet.subscribe("fast", fast, queue_size=5000)
    outlet.publish(ev(0))
    assert gate.entered.wait(WAIT)  # the slow one holds event 0 and blocks
    took = []
    for i in range(1, 2000):
        t0 = time.perf_counter()
        outlet.publish(ev(i))
        took.append(time.perf_counter() - t0)
    # Blocked, one call would take the gate's 2 s; a queue's lock is held for microseconds (the
    # worst call allows for the scheduler on a loaded machine).
    took.sort()
    assert took[len(took) // 2] < 1e-3 and took[-1] < WAIT / 4, (took[len(took) // 2], took[-1])
    assert whys(fast.wait_for(2000)) == list(range(2000))
    f = outlet.figures()["slow"]
    assert (f.queued, f.dropped, f.delivered) == (100, 1899, 0)
    gate.open.set()
    final = outlet.close(timeout=WAIT)
    assert whys(gate.got) == list(range(101))  # the first, then what its queue held: in order
    assert (final["slow"].delivered, final["slow"].dropped) == (101, 1899)
    assert final["fast"].dropped == 0


def test_a_failing_subscriber_keeps_receiving_logged_once(
    outlet: EventOutlet, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    def flaky(event: Event) -> None:
        assert isinstance(event, LinkDown)
        seen.append(int(event.why))
        if int(event.why) % 2:
            raise ValueError(f"cannot take {event.why}")

    good = Collector()
    outlet.subscribe("flaky", flaky)
    outlet.subscribe("good", good)
    with caplog.at_level(logging.WARNING, logger="controller.events.outlet"):
        for i in range(100):
            outlet.publish(ev(i))
        assert whys(good.wait_for(100)) == list(range(100))
        final = outlet.close(timeout=WAIT)
    assert seen == list(range(100))
    assert (final["flaky"].delivered, final["flaky"].failed, final["good"].failed) == (50, 50, 0)
    lines = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None  # one traceback, not one per event


def test_close_delivers_what_is_queued_then_calls_the_close_hook() -> None:
    out = EventOutlet()
    order: list[str] = []

    def slowish(event: Event) -> None:
        time.sleep(0.0005)
        order.append("event")

    out.subscribe("slowish", slowish, on_close=lambda: order.append("close"))
    for i in range(200):
        out.publish(ev(i))
    final = out.close(timeout=WAIT)
    assert order == ["event"] * 200 + ["close"]
    assert (final["slowish"].delivered, final["slowish"].queued, final["slowish"].dropped) == (200, 0, 0)
    out.publish(ev(201))  # after close: goes nowhere, does not raise
    with pytest.raises(RuntimeError, match="closed"):
        out.subscribe("late", Collector())


def test_close_gives_up_on_a_stuck_subscriber_at_its_timeout() -> None:
    out = EventOutlet()
    gate, closed = Gate(), threading.Event()
    out.subscribe("stuck", gate, on_close=closed.set)
    for i in range(10):
        out.publish(ev(i))
    assert gate.entered.wait(WAIT)
    t0 = time.monotonic()
    final = out.close(timeout=0.1)
    assert time.monotonic() - t0 < 1.0
    assert final["stuck"].dropped == 9  # the one it holds still arrives; the rest are gone
    gate.open.set()
    assert closed.wait(WAIT)  # it ends (and is told) once its callback returns
    assert whys(gate.got) == [0]


def test_many_subscribers_each_get_everything_in_order(outlet: EventOutlet) -> None:
    subs = [Collector() for _ in range(40)]
    for k, sub in enumerate(subs):
        outlet.subscribe(f"s{k}", sub, on_close=sub.close)
    for i in range(300):
        outlet.publish(ev(i))
    for sub in subs:
        assert whys(sub.wait_for(300)) == list(range(300))
    final = outlet.close(timeout=WAIT)
    assert all(s.closed == 1 for s in subs)
    assert all((f.delivered, f.dropped, f.failed) == (300, 0, 0) for f in final.values())
    assert outlet.published == 300


@pytest.mark.parametrize("queue_size", [10_000, 50])
def test_publish_from_two_threads_loses_no_count(outlet: EventOutlet, queue_size: int) -> None:
    got = Collector()
    outlet.subscribe("all", got, queue_size=queue_size)
    start = threading.Barrier(2)

    def publisher(tag: str) -> Callable[[], None]:
        def run() -> None:
            start.wait(WAIT)
            for i in range(3000):
                outlet.publish(LinkUp(f"{tag}{i}"))

        return run

    threads = [threading.Thread(target=publisher(tag), name=f"publisher-{tag}") for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    final = outlet.close(timeout=WAIT)["all"]
    assert outlet.published == 6000 and outlet.errors == 0
    assert final.delivered + final.dropped == 6000
    for tag in "ab":  # each publisher's events arrive in its order
        mine = [int(e.why[1:]) for e in got.got if isinstance(e, LinkUp) and e.why[0] == tag]
        assert mine == sorted(mine)
    if queue_size == 10_000:
        assert final.dropped == 0 and len(got.got) == 6000


def test_subscribe_and_unsubscribe_at_any_time(outlet: EventOutlet) -> None:
    early, late = Collector(), Collector()
    outlet.subscribe("early", early, on_close=early.close)
    for i in range(10):
        outlet.publish(ev(i))
    outlet.subscribe("late", late)
    for i in range(10, 20):
        outlet.publish(ev(i))
    assert outlet.unsubscribe("early", timeout=WAIT)
    assert early.closed == 1 and whys(early.got) == list(range(20))
    for i in range(20, 30):
        outlet.publish(ev(i))
    assert whys(late.wait_for(20)) == list(range(10, 30))
    assert whys(early.got) == list(range(20))
    assert set(outlet.figures()) == {"late"}
    assert not outlet.unsubscribe("early")
    outlet.subscribe("early", early)  # the name is free again


def test_names_are_unique_and_queue_sizes_checked(outlet: EventOutlet) -> None:
    outlet.subscribe("one", Collector())
    with pytest.raises(ValueError, match="already subscribed"):
        outlet.subscribe("one", Collector())
    with pytest.raises(ValueError, match="at least 1"):
        outlet.subscribe("two", Collector(), queue_size=0)
    with pytest.raises(ValueError, match="at least 1"):
        EventOutlet(queue_size=0)
    assert outlet.figures()["one"].queue_size == DEFAULT_QUEUE_SIZE


def test_events_get_the_publish_time_unless_they_have_one(outlet: EventOutlet) -> None:
    got = Collector()
    outlet.subscribe("c", got)
    outlet.publish(LinkDown("a"))
    outlet.publish(LinkDown("b", time=5.0))
    assert [e.time for e in got.wait_for(2)] == [1000.0, 5.0]


def test_publish_never_raises(outlet: EventOutlet, caplog: pytest.LogCaptureFixture) -> None:
    got = Collector()
    outlet.subscribe("c", got)
    with caplog.at_level(logging.ERROR, logger="controller.events.outlet"):
        for _ in range(3):
            outlet.publish("not an event")  # type: ignore[arg-type]
    outlet.publish(LinkUp())
    assert len(got.wait_for(1)) == 1
    assert (outlet.errors, outlet.published) == (3, 1)
    assert len([r for r in caplog.records if "publish failed" in r.getMessage()]) == 1
