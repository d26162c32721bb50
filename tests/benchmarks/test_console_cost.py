"""Benchmark (make bench): what drawing the console costs the cell (issue 15, item 4).

The same parts (same seed) through `cellctl demo --json`, side by side in one run:
- `--headless`: no console;
- status polled: headless, its status asked for four times a second as the console does
  (what a console costs the control process itself);
- console: the demo on a pseudo-terminal of 100x30, its console attached and drawing the full
  view four times a second (in its own process, as `cellctl demo` runs it);
- in the control process: the screen rendered in the cell's own process four times a second,
  as the demo drew it before (to a null file), to show what the benchmark can see.

Prints trigger-to-verdict p50/p99 of each, in alternating rounds, and writes
.bench/console_cost.json. Only asserts that the runs completed. BENCH_CONSOLE_PARTS (300) and
BENCH_CONSOLE_ROUNDS (3) size it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import statistics
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".bench"
PARTS = int(os.environ.get("BENCH_CONSOLE_PARTS", "300"))
ROUNDS = int(os.environ.get("BENCH_CONSOLE_ROUNDS", "3"))
SEED = 7


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "t").mkdir(parents=True, exist_ok=True)
    return dict(os.environ, TMPDIR=str(tmp / "t"), CELLCTL_SOCKET=str(tmp / "s" / "cell.sock"), TERM="xterm")


def _demo(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "controller",
        "demo",
        "--parts",
        str(PARTS),
        "--seed",
        str(SEED),
        "--json",
        *args,
    ]


def headless(tmp: Path) -> dict[str, Any]:
    r = subprocess.run(_demo("--headless"), capture_output=True, text=True, env=_env(tmp), timeout=600)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return dict(json.loads(r.stdout))


def with_console(tmp: Path) -> dict[str, Any]:
    """The demo on a terminal of 100x30 (the full view); its screen read and counted."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    drawn = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                drawn.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        r = subprocess.run(
            _demo(), stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=_env(tmp), timeout=600,
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(slave)
        reader.join(timeout=5)
        os.close(master)
    assert r.returncode in (0, 1) and b"\x1b[?1049h" in drawn, drawn[-2000:]
    result = dict(json.loads(r.stdout))
    result["frames_drawn"] = drawn.count(b"inspection cell")
    return result


def status_polled(tmp: Path) -> dict[str, Any]:
    """Headless, its status asked for four times a second as the console does, nothing drawn."""
    import time

    from controller.api import ApiClient
    from controller.control import ControlError

    done = threading.Event()
    client, polls = ApiClient(tmp / "s" / "cell.sock", status_timeout=1.0), [0]

    def poll() -> None:
        while not done.is_set():
            t = time.monotonic()
            with contextlib.suppress(ControlError):
                client.snapshot()
                polls[0] += 1
            done.wait(max(0.0, 0.25 - (time.monotonic() - t)))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        return headless(tmp) | {"polls": polls[0]}
    finally:
        done.set()
        poller.join()


def drawn_in_process(tmp: Path) -> dict[str, Any]:
    code = "from tests.benchmarks.test_console_cost import _drawn_here as f; from pathlib import Path; "
    code += f"f(Path({str(tmp)!r}))"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp), timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(json.loads(r.stdout.splitlines()[-1]))


def _drawn_here(tmp: Path) -> None:
    """The demo as it drew before issue 15: the full screen rendered in the control process."""
    from rich.console import Console

    from controller.console import KEYS, render_status
    from controller.demo import DemoOptions, _demo

    async def draw(sim: Any, service: Any) -> None:
        with open(os.devnull, "w") as null:
            console = Console(file=null, width=100, height=30, force_terminal=True)
            while sim.done is None:
                console.print(render_status(service.snapshot(), (100, 30), "", KEYS))
                await asyncio.sleep(0.25)

    opts = DemoOptions(
        parts=PARTS, seed=SEED, headless=True, data_dir=tmp / "data", socket=tmp / "s" / "cell.sock"
    )
    result = asyncio.run(_demo(opts, tmp / "data", draw))
    print(json.dumps({"latency_ms": result["latency_ms"], "parts": result["parts"]}))


RUNS = {
    "headless": headless,
    "status polled": status_polled,
    "console": with_console,
    "in control process": drawn_in_process,
}


@pytest.mark.timeout(3600)
def test_the_console_costs_the_cell_nothing_measurable(tmp_path: Path) -> None:
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    print(f"\ntrigger-to-verdict latency, {PARTS} parts, seed {SEED}, p50 / p99 ms")
    for k in range(ROUNDS):
        line = []
        for name, run in RUNS.items():
            r = run(tmp_path / f"{name.replace(' ', '-')}-{k}")
            rows[name].append(r)
            extra = f", {r['frames_drawn']} frames" if "frames_drawn" in r else ""
            extra += f", {r['polls']} polls" if "polls" in r else ""
            line.append(f"{name} {r['latency_ms']['p50']} / {r['latency_ms']['p99']}{extra}")
        print(f"round {k + 1}: " + "; ".join(line), flush=True)
    summary = {
        name: {
            "p50_ms": round(statistics.median(r["latency_ms"]["p50"] for r in rs), 1),
            "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in rs), 1),
            "parts": [r["parts"] for r in rs],
        }
        for name, rs in rows.items()
    }
    print(
        "median over rounds: " + "; ".join(f"{n} {s['p50_ms']} / {s['p99_ms']}" for n, s in summary.items())
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "console_cost.json").write_text(json.dumps({"summary": summary, "runs": rows}, indent=2))
    assert all(r["parts"] == PARTS for rs in rows.values() for r in rs)
