"""Shared fixtures. Every test must leave no threads behind (servers, grab loops, writers)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import Broker

# pylon's camera emulation: four emulated Basler cameras (serials 0815-0000 .. 0815-0003). It must be
# set before pylon's transport layers load, so here rather than in a fixture.
os.environ.setdefault("PYLON_CAMEMU", "4")


#: The suite's order: the fast, narrow tests first (they fail soonest), the whole line last.
_ORDER = ("tests/unit/", "tests/sim/", "tests/hw/", "tests/e2e/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit, then sim, then hardware, then end-to-end tests, each kind in its collected order.
    Also keeps pylon's camera emulation, which holds state for the whole process, fresh for the
    driver's own tests: after the emulated cameras of the e2e runs (600 parts, one removed and
    back), two of those tests saw a camera never ready for a trigger again."""

    def kind(item: pytest.Item) -> int:
        path = str(item.path).replace(os.sep, "/")
        return next((k for k, p in enumerate(_ORDER) if p in path), len(_ORDER))

    items.sort(key=kind)  # stable: the collected order within each kind


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


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker on 127.0.0.1 and a free port (Mosquitto, else amqtt); stopped after the test.
    MQTT_TEST_BROKERS=amqtt tries only amqtt (the fallback's own check)."""
    problems = []
    for kind in os.environ.get("MQTT_TEST_BROKERS", "mosquitto,amqtt").split(","):
        try:
            broker = Broker(tmp_path, kind)
            broker.start()
            break
        except RuntimeError as exc:
            problems.append(f"{kind}: {exc}")
    else:
        pytest.skip(f"no MQTT broker could start ({'; '.join(problems)})")
    try:
        yield broker
    finally:
        broker.stop()
