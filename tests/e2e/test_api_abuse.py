"""The control API under abuse while the simulated line runs: a flood of status requests,
idle connections over the client cap and recipe requests for a name that does not exist.
The line must not notice: no verdict late, nothing lost, and the API answers afterwards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.api import request
from controller.demo import DemoOptions, _demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_api_flood_during_a_run_delays_no_verdict(tmp_path: Path) -> None:
    sock = tmp_path / "cell.sock"
    seen: dict[str, Any] = {}

    async def scenario(sim: Any, service: Any) -> None:
        while service.core.counts["parts"] < 20:
            await asyncio.sleep(0.05)
        seen["before"] = dict(service.core.counts)
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.e2e.api_flood", str(sock), "6", "300", "64", "8",
            cwd=ROOT, stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await flood.communicate()
        seen["flood"] = json.loads(out)
        seen["parts_during"] = service.core.counts["parts"] - seen["before"]["parts"]
        seen["after"] = await asyncio.to_thread(request, sock, {"op": "status"})

    opts = DemoOptions(
        parts=300, cameras=3, headless=True, data_dir=tmp_path, socket=sock, parts_per_min=1200
    )
    r = asyncio.run(_demo(opts, tmp_path, scenario))
    flood = seen["flood"]
    print(json.dumps(flood), json.dumps(r["counters"]), r["latency_ms"])
    late = {k: v for k, v in r["counters"].items() if k in ("no_decision:deadline", "no_decision:overload")}
    assert not late, late
    assert seen["parts_during"] > 60  # the line ran through the flood
    assert flood.get("status:ok", 0) > 100  # the API served while it was flooded ...
    assert seen["after"]["ok"] and seen["after"]["status"]["state"] == "EXECUTE"  # ... and after
    api = seen["after"]["status"]["api"]
    assert api.get("refused_busy", 0) > 0, api  # the client cap held
    assert r["lost"] == 0 and r["misrouted"] == 0 and r["records"] == r["parts"] == 300
