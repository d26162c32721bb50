"""A flood of control-API clients, run as its own process (so it does not share the cell's GIL):
`python -m tests.e2e.api_flood SOCKET SECONDS` prints one JSON line of what it got.

- `status` clients ask for the status as fast as they can, each on a new connection;
- `holders` open connections and send nothing (more of them than the API's client cap);
- `activators` ask to activate a recipe that does not exist, over and over.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter


async def main(sock: str, seconds: float, status: int, holders: int, activators: int) -> dict[str, int]:
    got: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def ask(payload: bytes, kind: str) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(sock, limit=1 << 22), 2.0)
        except (OSError, TimeoutError):
            got[f"{kind}:connect_failed"] += 1
            await asyncio.sleep(0.01)
            return
        try:
            writer.write(payload)
            line = await asyncio.wait_for(reader.readline(), 5.0)
            reply = json.loads(line) if line else {}
            if reply.get("ok"):
                got[f"{kind}:ok"] += 1
            else:
                err = str(reply.get("error", "closed"))
                got[f"{kind}:{err.split(':')[0].split(' ')[0]}"] += 1
        except (OSError, TimeoutError, ValueError) as exc:
            got[f"{kind}:failed:{type(exc).__name__}:{getattr(exc, 'errno', None)}"] += 1
        finally:
            writer.close()

    async def status_client() -> None:
        while time.monotonic() < end:
            await ask(b'{"op": "status"}\n', "status")

    async def activator() -> None:
        while time.monotonic() < end:
            await ask(b'{"op": "recipe_activate", "name": "no-such-recipe"}\n', "activate")

    async def holder() -> None:
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(sock), 2.0)
            except (OSError, TimeoutError):
                got["hold:connect_failed"] += 1
                await asyncio.sleep(0.05)
                continue
            got["hold:opened"] += 1
            try:
                await asyncio.wait_for(reader.read(), max(0.01, end - time.monotonic()))
                got["hold:closed_by_server"] += 1
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()

    tasks = [status_client() for _ in range(status)] + [holder() for _ in range(holders)]
    tasks += [activator() for _ in range(activators)]
    await asyncio.gather(*tasks)
    return dict(got)


if __name__ == "__main__":
    # Niced: the test measures what serving the flood costs the cell, not what a CPU hog beside
    # it costs a 2-core machine.
    os.nice(15)
    sock, seconds = sys.argv[1], float(sys.argv[2])
    status, holders, activators = (int(x) for x in sys.argv[3:6]) if len(sys.argv) > 5 else (300, 64, 8)
    print(json.dumps(asyncio.run(main(sock, seconds, status, holders, activators))), flush=True)
