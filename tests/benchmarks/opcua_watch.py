"""An OPC UA client subscribed to the cell's result events, as a plant's (a process of its own,
so its work does not fall on the benchmark's simulated line): `python -m tests.benchmarks.
opcua_watch <endpoint>`. Prints `ready` once subscribed, and at SIGTERM the events it got."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from asyncua import Client


class Count:
    def __init__(self) -> None:
        self.events = 0

    def event_notification(self, event: Any) -> None:
        self.events += 1


async def main(endpoint: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    count = Count()
    async with Client(endpoint, timeout=5) as c:
        idx = await c.get_namespace_index("urn:inspection-cell:machine-vision")
        cell = await c.nodes.objects.get_child([f"{idx}:InspectionCell"])
        etype = await c.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
        sub = await c.create_subscription(100, count)
        await sub.subscribe_events(cell, etype, queuesize=10_000)
        print("ready", flush=True)
        await stop.wait()
        await asyncio.sleep(0.5)  # the last notifications
        await sub.delete()
    print(count.events, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
