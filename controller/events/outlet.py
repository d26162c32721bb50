"""The event outlet: one publisher on the control loop, any number of subscribers.

What a subscriber may assume:

- **Order.** It receives events in the order they were published (per publishing thread),
  one at a time, on its own named thread (`events:<name>`); never two calls at once.
- **At most once.** Each event is delivered at most once. A subscriber whose queue is full
  misses the event (the newest is dropped, the queued ones kept) and the drop is counted in
  its figures; nothing is retried. A subscriber that must not miss anything keeps up, or
  keeps its own buffer (the MQTT publisher's disk queue).
- **Isolation.** `publish` never blocks and never raises: a slow subscriber fills only its
  own queue, and one that raises is counted and logged (rate-limited) and keeps receiving.
- **Close.** `close(timeout)` delivers what is queued, then calls each subscriber's close hook
  on its thread; a subscriber still busy at the timeout loses the rest (counted as dropped).
- **Time.** Every event it receives has `time` set (the publish time where the maker had none).

The record store is not a subscriber: the service writes every part record to it directly,
and it never drops one. The outlet is for those who watch (status, console, MQTT, OPC UA,
reports, a shadow model), and a watcher that falls behind loses events, never records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from controller.events.types import Event

log = logging.getLogger(__name__)

#: Events a subscriber may fall behind by before it misses some: about 40 s of parts at
#: 1,500 parts/min (one event a part), with room for a burst of state and alarm events.
DEFAULT_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class SubscriberFigures:
    """One subscriber's counts: events waiting, delivered, dropped (queue full or left at
    close), and failed (its callback raised)."""

    queued: int
    delivered: int
    dropped: int
    failed: int
    queue_size: int


class _Subscriber:
    """One subscriber: its bounded queue, its delivery thread and its counts."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[Event], None],
        on_close: Callable[[], None] | None,
        queue_size: int,
        log_interval_s: float,
    ) -> None:
        self.name, self.queue_size = name, queue_size
        self._deliver, self._on_close, self._log_interval_s = deliver, on_close, log_interval_s
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Event] = deque()
        self._stopping = False  # deliver what is queued, then end
        self.delivered = self.dropped = self.failed = 0
        self._logged_at = float("-inf")
        # A daemon: a subscriber stuck in its callback must not keep the process from exiting.
        self.thread = threading.Thread(target=self._run, name=f"events:{name}", daemon=True)

    def offer(self, event: Event) -> None:
        """Queue `event` or count it dropped; holds only this subscriber's lock, briefly."""
        with self._cond:
            if self._stopping:  # unsubscribed while this event was being published
                return
            if len(self._queue) >= self.queue_size:
                self.dropped += 1
                return
            self._queue.append(event)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def abandon(self) -> int:
        """Give up what is still queued (counted as dropped); returns how many."""
        with self._cond:
            self._stopping = True
            left = len(self._queue)
            self.dropped += left
            self._queue.clear()
            self._cond.notify()
            return left

    def figures(self) -> SubscriberFigures:
        with self._cond:
            return SubscriberFigures(
                len(self._queue), self.delivered, self.dropped, self.failed, self.queue_size
            )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:  # stopping, and all delivered (or abandoned)
                    break
                event = self._queue.popleft()
            self._call(event)
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception as exc:
                log.error("event subscriber %s: close failed: %s: %s", self.name, type(exc).__name__, exc)

    def _call(self, event: Event) -> None:
        try:
            self._deliver(event)
        except Exception as exc:  # whatever a subscriber does wrong, it keeps receiving
            self.failed += 1
            now = time.monotonic()
            if now - self._logged_at >= self._log_interval_s:
                self._logged_at = now
                log.warning(
                    "event subscriber %s failed (%d so far): %s: %s",
                    self.name, self.failed, type(exc).__name__, exc,
                    exc_info=self.failed == 1,  # one traceback, for the first failure only
                )  # fmt: skip
        else:
            self.delivered += 1


class EventOutlet:
    """Publishes the cell's events to its subscribers, each on its own thread and queue.

    `publish` is for the control loop (any thread may call it); `subscribe`, `unsubscribe` and
    `figures` may be called at any time from any thread; `close` once, at shutdown."""

    def __init__(
        self,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
        log_interval_s: float = 60.0,
    ) -> None:
        """`queue_size`: each subscriber's, unless it asks for its own; `clock`: the wall
        clock that stamps events published without a time; `log_interval_s`: at most one log
        line per failing subscriber (and for publish errors) per interval."""
        if queue_size < 1:
            raise ValueError(f"event queue size must be at least 1, not {queue_size}")
        self.queue_size, self._clock, self._log_interval_s = queue_size, clock, log_interval_s
        self._lock = threading.Lock()  # guards the subscriber lists
        self._subs: tuple[_Subscriber, ...] = ()  # replaced, never changed: publish reads it unlocked
        self._leaving: list[_Subscriber] = []  # unsubscribed, still delivering what they had
        self._closed = False
        self._count_lock = threading.Lock()  # publish's own: never waits on a subscribe
        self._published = 0
        self._errors = 0
        self._error_logged_at = float("-inf")

    # ---------------------------------------------------------------- publish
    def publish(self, event: Event) -> None:
        """Hand `event` to every subscriber's queue. Never blocks, never raises."""
        try:
            if event.time is None:
                event = replace(event, time=self._clock())
            for sub in self._subs:
                sub.offer(event)
            with self._count_lock:
                self._published += 1
        except Exception as exc:  # a bug here must never stop the control loop
            with self._count_lock:
                self._errors += 1
                now = time.monotonic()
                if now - self._error_logged_at < self._log_interval_s:
                    return
                self._error_logged_at = now
            log.error(
                "event outlet: publish failed (%d so far): %s: %s", self._errors, type(exc).__name__, exc
            )

    # ----------------------------------------------------------- subscribers
    def subscribe(
        self,
        name: str,
        deliver: Callable[[Event], None],
        on_close: Callable[[], None] | None = None,
        queue_size: int | None = None,
    ) -> None:
        """Deliver every event published from now on to `deliver`, on a thread of its own.

        `on_close` is called on that thread once, after the last event (at `unsubscribe` or
        `close`). `name` names the thread, the figures and the log lines; it must be unique."""
        size = self.queue_size if queue_size is None else queue_size
        if size < 1:
            raise ValueError(f"event subscriber {name}: queue size must be at least 1, not {size}")
        sub = _Subscriber(name, deliver, on_close, size, self._log_interval_s)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"event subscriber {name}: the outlet is closed")
            self._leaving = [s for s in self._leaving if s.thread.is_alive()]
            if any(s.name == name for s in (*self._subs, *self._leaving)):
                raise ValueError(f"event subscriber {name} is already subscribed")
            sub.thread.start()
            self._subs = (*self._subs, sub)

    def unsubscribe(self, name: str, timeout: float = 0.0) -> bool:
        """Stop delivering to `name`: it gets what is already queued, then its close hook.

        Waits up to `timeout` for that (0: not at all; `close` waits for it later). False if
        no subscriber has that name."""
        with self._lock:
            sub = next((s for s in self._subs if s.name == name), None)
            if sub is None:
                return False
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._leaving = [s for s in self._leaving if s.thread.is_alive()]
            self._leaving.append(sub)
        sub.stop()
        if timeout > 0:
            sub.thread.join(timeout)
        return True

    def figures(self) -> dict[str, SubscriberFigures]:
        """Each subscriber's counts, by name (those still finishing after unsubscribe too)."""
        with self._lock:
            subs = [*self._subs, *(s for s in self._leaving if s.thread.is_alive())]
        return {s.name: s.figures() for s in subs}

    @property
    def published(self) -> int:
        """Events published (each offered to every subscriber of the moment)."""
        return self._published

    @property
    def errors(self) -> int:
        """Publish calls that failed (a bug: the event went nowhere)."""
        return self._errors

    # ------------------------------------------------------------------ close
    def close(self, timeout: float = 2.0) -> dict[str, SubscriberFigures]:
        """Deliver what is queued (up to `timeout` in all), call the close hooks, stop the
        threads. Returns each subscriber's final figures. Publishing afterwards does nothing."""
        with self._lock:
            self._closed = True
            subs = [*self._subs, *self._leaving]
            self._subs, self._leaving = (), []
        for sub in subs:
            sub.stop()
        deadline = time.monotonic() + timeout
        for sub in subs:
            sub.thread.join(max(deadline - time.monotonic(), 0.0))
        for sub in subs:
            if sub.thread.is_alive():
                left = sub.abandon()
                log.warning(
                    "event subscriber %s still busy after %.1f s: %d queued events dropped",
                    sub.name,
                    timeout,
                    left,
                )
        return {s.name: s.figures() for s in subs}


__all__ = ["DEFAULT_QUEUE_SIZE", "EventOutlet", "SubscriberFigures"]
