"""Shared fixtures. Every test must leave no threads behind (servers, grab loops, writers)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

# pylon's camera emulation: four emulated Basler cameras (serials 0815-0000 .. 0815-0003). It must be
# set before pylon's transport layers load, so here rather than in a fixture.
os.environ.setdefault("PYLON_CAMEMU", "4")


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        # asyncio's default executor threads and the multiprocessing resource tracker are shared.
        extra = [
            t for t in extra if not t.name.startswith(("asyncio_", "ThreadPoolExecutor", "QueueFeederThread"))
        ]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"test left threads running: {[t.name for t in extra]}"
