"""Logging of every `cellctl` command: one line format, libraries quiet unless asked, and
nothing written over a live console.

`cellctl run` logs on stdout (journald reads a service's stdout, with `<N>` priority prefixes
when systemd says stdout is the journal); every other command logs on stderr, so that stdout
carries only its result (`demo --json`, `status --json`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import deque
from collections.abc import Iterator
from typing import ClassVar

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
#: journald stamps each line itself; `<N>` is the line's syslog priority.
JOURNAL_FORMAT = "%(prio)s%(levelname)s %(name)s [%(threadName)s] %(message)s"

#: Libraries whose debug lines come per packet (snap7's hex dumps, pymodbus's frames) or per
#: callback (transitions), or per request (asyncua): their level at `-v`. At `-vv` they log everything too.
LIBRARIES = {
    "snap7": logging.INFO, "pymodbus": logging.INFO, "transitions": logging.WARNING,
    "asyncua": logging.WARNING, "paho": logging.INFO,
}  # fmt: skip


def levels(verbosity: int, service: bool = False) -> dict[str, int]:
    """Logger name ("" for the root) to level for `-v` given `verbosity` times."""
    if verbosity >= 2:
        return {"": logging.DEBUG, **{name: logging.DEBUG for name in LIBRARIES}}
    if verbosity == 1:
        return {"": logging.DEBUG, **LIBRARIES}
    return {"": logging.INFO if service else logging.WARNING, **{name: logging.WARNING for name in LIBRARIES}}


class _Stdio(logging.Handler):
    """Writes to `sys.stdout` or `sys.stderr` as it is when the record comes, not when the handler
    was made (a live display that captures the stream, and pytest, replace them)."""

    def __init__(self, stream: str) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            out = getattr(sys, self.stream)
            out.write(self.format(record) + "\n")
            out.flush()
        except Exception:  # logging must never take the cell down
            self.handleError(record)


class _JournalPriority(logging.Filter):
    """Adds the `<N>` syslog priority prefix journald reads from a service's stdout."""

    LEVELS: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2
    }  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        record.prio = f"<{self.LEVELS.get(record.levelno, 6)}>"
        return True


def setup_logging(verbosity: int = 0, service: bool = False) -> None:
    """Configure logging for one `cellctl` command (`service`: `cellctl run`). Its line goes to
    the root logger as `logging.basicConfig` does, unless the root has handlers already (a host
    such as pytest); the service's process is its own, so there it always does."""
    root = logging.getLogger()
    for name, level in levels(verbosity, service).items():
        logging.getLogger(name or None).setLevel(level)
    if root.handlers and not service:
        return
    handler = _Stdio("stdout" if service else "stderr")
    if service and os.environ.get("JOURNAL_STREAM"):
        handler.addFilter(_JournalPriority())
        handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(FORMAT))
    root.handlers = [handler]  # a new list: a thread logging now goes on with the old one


class _Held(logging.Handler):
    """Keeps the last `limit` records; counts the ones it had to let go."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.records: deque[logging.LogRecord] = deque(maxlen=limit)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) == self.records.maxlen:
            self.dropped += 1
        self.records.append(record)


@contextlib.contextmanager
def held_logs(limit: int = 500) -> Iterator[None]:
    """While a full-screen display is up, log records wait (the last `limit`; older ones are
    counted) and are written, with their own times, once it is gone."""
    root = logging.getLogger()
    saved = root.handlers[:]
    held = _Held(limit)
    root.handlers = [held]
    try:
        yield
    finally:
        root.handlers = saved
        if held.dropped:
            logging.getLogger(__name__).warning(
                "%d log records from while the screen was up were dropped (the last %d follow)",
                held.dropped, len(held.records),
            )  # fmt: skip
        for record in held.records:
            for handler in saved:
                if record.levelno >= handler.level:
                    handler.handle(record)
