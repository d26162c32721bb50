"""Soak benchmark (`make soak`; not in CI, not in `make test`): `cellctl run` as systemd runs it,
on the simulated S7 line, for SOAK_MINUTES (default 10) with a fault every SOAK_FAULT_EVERY_S
(default 60): PLC link drops, PLC data faults and SIGSTOP of the service, in turn; the soak
unholds the cell after each, as an operator would.

Every SOAK_SAMPLE_S (default 10) it samples the service process (rss, open file handles,
threads) and its status (state, parts, latency, verdict journal sync); at the end it runs the
belt empty, stops the service with SIGTERM and scores every part against its record. Latency
percentiles per minute come from the records. Writes `.bench/soak.json`, prints a table, and
exits 1 if a part was lost, misrouted or passed without an accepted verdict.

Other knobs: SOAK_PARTS_PER_MIN (1200), SOAK_DIR (a folder to keep the data in).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from controller.api import ApiError, request
from controller.sim_line import start_line as serve_line
from simulators.launcher import SimLine
from simulators.scorer import load_run, record_of, routing, score

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".bench"
CELL = ROOT / "recipes/cells/demo-cell.yaml"
RECIPE = ROOT / "recipes/plate-4h.yaml"

#: The faults in turn: (kind, value). After a PLC restart part ids start again at 1 in a new
#: epoch: the scorer judges each part by (epoch, id).
FAULTS: list[tuple[str, float]] = [
    ("drop_link", 1.5),
    ("part_seq_glitch", 1000),
    ("sigstop", 3.0),
    ("encoder_step", -20_000),
    ("bad_part_slot", 0),
    ("unknown_disposition", 3_000_000_000),
    ("restart", 0),
]


#: The record's side of a misrouted part, in `.bench/soak.json`.
RECORD_FIELDS = ("verdict", "ack", "expected_kick", "kicked", "plc_cause", "alarms")


def proc_sample(pid: int) -> dict[str, float]:
    """rss (MB), open file handles and threads of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024.0, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
    }


def start_line(tmp: Path, ppm: float) -> tuple[SimLine, Path]:
    """The simulated line in this process, cameras on UNIX sockets; a cell config for it (as
    `cellctl sim` starts it)."""
    served = serve_line(CELL, RECIPE, tmp / "line", parts_per_min=ppm)
    return served.sim, served.cell_file


def status(sock: Path) -> dict[str, Any]:
    try:
        reply = request(sock, {"op": "status"}, timeout=5.0)
    except ApiError:
        return {}
    st = reply.get("status")
    return st if isinstance(st, dict) else {}


def command(sock: Path, name: str) -> bool:
    try:
        return bool(request(sock, {"op": "command", "command": name})["ok"])
    except ApiError:
        return False


def sample_row(s: dict[str, Any]) -> str:
    nan = float("nan")
    jnl = s["journal_ms"][1] if s["journal_ms"] else nan
    return (
        f"{s['t_s']:>6.0f} {s['state']:>9} {s['parts'] or 0:>7} {s['rss_mb']:>7.1f} {s['fds']:>4} "
        f"{s['threads']:>4} {s['p50_ms'] or nan:>7.2f} {s['p99_ms'] or nan:>7.2f} {jnl:>7.2f} "
        f"{s['load1']:>5.1f}  " + ",".join(map(str, s["alarms"]))
    )


def spread(values: list[float]) -> dict[str, float | None]:
    return {"min": min(values, default=None), "max": max(values, default=None)}


def latency_by_minute(db: Path, run_id: str) -> list[dict[str, Any]]:
    """Trigger-to-verdict latency percentiles per minute of the run, from the records."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT t_registered, latency_ms, verdict, reason FROM parts WHERE run_id = ? "
            "ORDER BY t_registered",
            (run_id,),
        ).fetchall()
    if not rows:
        return []
    t0 = rows[0][0]
    minutes: dict[int, list[tuple[float | None, str, str]]] = {}
    for t, lat, verdict, reason in rows:
        minutes.setdefault(int((t - t0) // 60), []).append((lat, verdict, reason))
    out = []
    for m, items in sorted(minutes.items()):
        lat = np.array([x for x, _, _ in items if x is not None], dtype=float)
        out.append(
            {
                "minute": m,
                "parts": len(items),
                "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
                "max_ms": round(float(lat.max()), 2) if lat.size else None,
                "no_decision": sum(v == "NO_DECISION" for _, v, _ in items),
            }
        )
    return out


def soak(tmp: Path, minutes: float, fault_every_s: float, sample_s: float, ppm: float) -> dict[str, Any]:
    sim, cell_file = start_line(tmp, ppm)
    sock = tmp / "cell.sock"
    cmd = [
        sys.executable, "-m", "controller.cli", "run", "--cell", str(cell_file), "--recipe", "plate-4h",
        "--recipes", str(ROOT / "recipes"), "--data-dir", str(tmp / "data"), "--socket", str(sock),
        "--drain-timeout", "3",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    log_file = (tmp / "service.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    samples: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 90
        while not status(sock).get("ready"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not get ready: see {tmp / 'service.log'}")
            time.sleep(0.2)
        command(sock, "reset")
        time.sleep(0.3)
        command(sock, "start")
        t0 = time.monotonic()
        end = t0 + minutes * 60.0
        next_sample, next_fault, k = t0, t0 + fault_every_s, 0
        print(f"soak: {minutes:g} min, a fault every {fault_every_s:g} s, data in {tmp}", flush=True)
        print(f"{'t_s':>6} {'state':>9} {'parts':>7} {'rss_MB':>7} {'fds':>4} {'thr':>4} "
              f"{'p50_ms':>7} {'p99_ms':>7} {'jnl_p99':>7} {'load':>5}  alarms")  # fmt: skip
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_fault:
                kind, value = FAULTS[k % len(FAULTS)]
                k += 1
                faults.append({"t_s": round(now - t0, 1), "fault": kind, "value": value})
                try:
                    if kind == "drop_link":
                        sim.drop_link(value)
                    elif kind == "sigstop":
                        proc.send_signal(signal.SIGSTOP)
                        time.sleep(value)
                        proc.send_signal(signal.SIGCONT)
                    else:
                        sim.inject(kind, int(value))
                except TimeoutError as exc:  # the machine stalled: say so, go on
                    faults[-1]["error"] = str(exc)
                faults[-1]["recovered_s"] = recover(sock, fault_s=value if kind == "drop_link" else 0.0)
                next_fault += fault_every_s
            if now >= next_sample:
                st = status(sock)
                s = {"t_s": round(now - t0, 1), **proc_sample(proc.pid), "load1": os.getloadavg()[0],
                     "state": st.get("state", "?"),
                     "parts": st.get("parts"), "p50_ms": st.get("latency_p50_ms"),
                     "p99_ms": st.get("latency_p99_ms"),
                     "journal_ms": st.get("stage_ms", {}).get("journal"),
                     "alarms": sorted(st.get("alarms", {}))}  # fmt: skip
                samples.append(s)
                print(sample_row(s), flush=True)
                next_sample += sample_s
            time.sleep(0.1)
        fed = retry(sim.close_infeed)
        deadline = time.monotonic() + 60
        while retry(sim.status)[2] < fed and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the last dispositions reach the cell
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        outcomes, dropped = retry(sim.outcomes)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()
        sim.stop()
    db = tmp / "data" / "var" / "records.sqlite"
    with sqlite3.connect(db) as con:
        (run_id,) = con.execute("SELECT run_id FROM runs ORDER BY started_utc LIMIT 1").fetchone()
    records = load_run(db, run_id)
    scored = score(outcomes, records, dropped)
    misrouted = [  # what the scorer counts as misrouted, part by part, for diagnosis
        {"epoch": o.epoch, "part_id": o.part_id, "kicked": o.kicked, "plc_cause": o.cause,
         "plc_verdict": o.verdict,
         **{f"record_{k}": r[k] for k in RECORD_FIELDS}}
        for o, r in routing([(o, record_of(o, records)) for o in outcomes])[0]
    ]  # fmt: skip
    rss = [s["rss_mb"] for s in samples]
    warm = rss[min(3, len(rss) - 1) :] if rss else []
    hours = (samples[-1]["t_s"] - samples[min(3, len(samples) - 1)]["t_s"]) / 3600.0 if samples else 0.0
    growth = round((warm[-1] - warm[0]) / hours, 1) if len(warm) > 1 and hours > 0 else None
    log_text = (tmp / "service.log").read_text()
    return {
        "minutes": minutes,
        "fault_every_s": fault_every_s,
        "parts_per_min": ppm,
        "exit_code": rc,
        "tracebacks_in_log": log_text.count("Traceback"),
        "log_bytes": len(log_text),
        "invariants": {
            k: scored[k] for k in ("parts", "records", "lost", "misrouted", "passed_without_verdict")
        },
        "score": scored,
        "rss_mb": {
            "first": rss[0] if rss else None,
            "max": max(rss, default=None),
            "last": rss[-1] if rss else None,
            "growth_mb_per_h_after_warmup": growth,
        },
        "fds": spread([s["fds"] for s in samples]),
        "threads": spread([s["threads"] for s in samples]),
        "misrouted_parts": misrouted[:100],
        "latency_by_minute": latency_by_minute(db, run_id),
        "faults": faults,
        "samples": samples,
    }


T = TypeVar("T")


def retry(ask: Callable[[], T], tries: int = 5) -> T:
    """Ask the simulated PLC again when it did not answer in time (the shared machine stalled)."""
    for _ in range(tries - 1):
        try:
            return ask()
        except TimeoutError:
            time.sleep(1.0)
    return ask()


def recover(sock: Path, fault_s: float) -> float | None:
    """As an operator would: once the cell holds (or a few seconds pass), unhold until it inspects
    again. Returns seconds until Execute, or None if it never got there."""
    t0 = time.monotonic()
    time.sleep(fault_s + 1.0)
    while time.monotonic() - t0 < fault_s + 20.0:
        state = status(sock).get("state")
        if state == "EXECUTE":
            return round(time.monotonic() - t0, 2)
        if state == "HELD":
            command(sock, "unhold")
        elif state in ("STOPPED", "ABORTED", "IDLE"):
            command(sock, "reset" if state != "IDLE" else "start")
        time.sleep(0.3)
    return None


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    every = float(os.environ.get("SOAK_FAULT_EVERY_S", "60"))
    sample_s = float(os.environ.get("SOAK_SAMPLE_S", "10"))
    ppm = float(os.environ.get("SOAK_PARTS_PER_MIN", "1200"))
    keep = os.environ.get("SOAK_DIR")
    with contextlib.ExitStack() as stack:
        tmp = (
            Path(keep)
            if keep
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cell-soak-")))
        )
        tmp.mkdir(parents=True, exist_ok=True)
        r = soak(tmp, minutes, every, sample_s, ppm)
    OUT.mkdir(exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(r, indent=2))
    print("\nminute  parts  p50_ms  p99_ms  max_ms  no_decision")
    for m in r["latency_by_minute"]:
        print(
            f"{m['minute']:>6} {m['parts']:>6} {m['p50_ms']:>7} {m['p99_ms']:>7} {m['max_ms']:>7} "
            f"{m['no_decision']:>12}"
        )
    print(
        "\nfaults:",
        ", ".join(f"{f['fault']}@{f['t_s']:.0f}s (back in {f['recovered_s']} s)" for f in r["faults"]),
    )
    print(f"rss MB {r['rss_mb']}, fds {r['fds']}, threads {r['threads']}")
    print(f"invariants {r['invariants']}, exit code {r['exit_code']}, tracebacks {r['tracebacks_in_log']}")
    print(f"wrote {OUT / 'soak.json'}")
    inv = r["invariants"]
    return 0 if inv["lost"] == 0 and inv["misrouted"] == 0 and inv["passed_without_verdict"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
