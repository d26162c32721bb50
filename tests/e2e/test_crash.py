"""kill -9 of `cellctl run` mid-run: every part the PLC accepted a verdict for still gets a record.

The simulated line runs in this process and outlives the service, so its outcomes say which
verdicts the PLC accepted; the service is started again on the same data folder.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from controller.api import request
from controller.contract import Verdict
from simulators.launcher import SimLine
from simulators.scorer import load_records
from tests.e2e.test_service import Notifications, start_service
from tests.e2e.test_service import line as line  # the fixture

__all__ = ["line"]


def _stop(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_kill_9_keeps_a_record_of_every_verdict_the_plc_accepted(
    tmp_path: Path, line: tuple[SimLine, Path]
) -> None:
    sim, cell_file = line
    sock = tmp_path / "cell.sock"
    notify = Notifications(tmp_path / "notify.sock")
    proc = start_service(tmp_path, cell_file, notify)
    try:
        notify.wait_for("READY", 60.0)
        assert request(sock, {"op": "command", "command": "reset"})["ok"]
        time.sleep(0.2)
        assert request(sock, {"op": "command", "command": "start"})["ok"]
        deadline = time.monotonic() + 30
        while sim.status()[2] < 60:  # parts reported: records are being written by now
            assert time.monotonic() < deadline, "the line never fed parts"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-run: parts in flight hold accepted verdicts
        proc.wait(timeout=10)
    finally:
        _stop(proc, signal.SIGKILL)
        notify.close()
    first_log = (tmp_path / "service.log").read_text()

    fed = sim.close_infeed()
    deadline = time.monotonic() + 10
    while sim.status()[2] < fed and time.monotonic() < deadline:
        time.sleep(0.05)
    outcomes, _ = sim.outcomes()
    db = tmp_path / "data" / "var" / "records.sqlite"
    with sqlite3.connect(db) as con:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()

    # The service starts again on the same data folder, then stops cleanly.
    (tmp_path / "service.log").rename(tmp_path / "service-1.log")
    notify = Notifications(tmp_path / "notify2.sock")
    proc = start_service(tmp_path, cell_file, notify)
    try:
        notify.wait_for("READY", 60.0)
    finally:
        _stop(proc, signal.SIGTERM)
        notify.close()
    out = (tmp_path / "service.log").read_text()
    print(first_log[-1500:], out[-3000:])
    assert proc.returncode == 0, out[-2000:]
    assert "Traceback" not in out

    journal = tmp_path / "data" / "var" / "journal"
    assert not list(journal.glob("*.jsonl")), "replayed at the start, nothing left after a clean stop"
    records = load_records(db, run_id)
    accepted = {o.part_id: o for o in outcomes if o.verdict != Verdict.NONE}
    assert len(accepted) >= 60
    lost = sorted(pid for pid in accepted if pid not in records)
    assert not lost, f"{len(lost)} parts with an accepted verdict have no record: {lost}"
    missing = {pid for pid, r in records.items() if r["kicked"] is None}
    print(json.dumps({"accepted": len(accepted), "records": len(records), "no_disposition": len(missing)}))
    assert missing, "the kill came mid-run: some records must lack their disposition"
    for pid, r in records.items():
        if pid in missing:  # marked so, with what the cell decided
            assert "disposition_missing" in json.loads(r["alarms"]), r
            assert r["expected_kick"] is None
        if pid in accepted:
            assert r["verdict"] == Verdict(accepted[pid].verdict).name, (r, accepted[pid])


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_verdict_journal_that_cannot_be_written_passes_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal fails for a second mid-run: PASS verdicts not in it are withheld (the PLC
    rejects those parts), alarm 41 holds the cell, and nothing is lost or misrouted."""
    import asyncio
    import errno
    from typing import Any

    from controller.demo import DemoOptions, _demo
    from controller.journal import VerdictJournal

    durable: set[int] = set()
    failed: set[int] = set()
    first_watched: list[int] = []

    async def scenario(sim: Any, service: Any) -> None:
        journal: VerdictJournal = service.store.journal
        real = journal.append
        broken = False

        def append(entries: list[dict[str, Any]]) -> None:
            ids = {int(e["part_id"]) for e in entries}
            # Fails from the first batch with a PASS in it, so that a PASS is at stake.
            if broken and (failed or any(e["verdict"] == "PASS" for e in entries)):
                failed.update(ids)
                raise OSError(errno.EIO, "Input/output error")
            real(entries)
            durable.update(ids)
            if not first_watched:
                first_watched.append(min(ids))

        monkeypatch.setattr(journal, "append", append)
        while service.core.counts["parts"] < 60:
            await asyncio.sleep(0.05)
        broken = True
        await asyncio.sleep(1.0)
        broken = False

    opts = DemoOptions(parts=200, cameras=3, headless=True, data_dir=tmp_path, socket=tmp_path / "cell.sock")
    r = asyncio.run(_demo(opts, tmp_path, scenario))
    print(json.dumps(r, indent=2))
    assert r["lost"] == 0 and r["misrouted"] == 0 and r["passed_without_verdict"] == 0
    assert failed, "the journal failed while verdicts were being made"
    records = load_records(Path(r["database"]), str(r["run_id"]))
    passed = [pid for pid, rec in records.items() if pid >= first_watched[0] and not rec["kicked"]]
    assert passed and all(pid in durable for pid in passed), "every part passed was journaled first"
    withheld = [pid for pid in failed - durable if records[pid]["verdict"] == "PASS"]
    assert withheld and all(records[pid]["kicked"] and records[pid]["ack"] == "NONE" for pid in withheld)
    with sqlite3.connect(r["database"]) as con:
        codes = {c for (c,) in con.execute("SELECT code FROM alarms")}
    assert 41 in codes


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_sighup_stops_the_cell_cleanly_like_sigterm(tmp_path: Path, line: tuple[SimLine, Path]) -> None:
    """A hang-up (the terminal of a `cellctl run` started by hand closes) drains and flushes
    like SIGTERM, instead of killing the cell where it stands."""
    sim, cell_file = line
    sock = tmp_path / "cell.sock"
    notify = Notifications(tmp_path / "notify.sock")
    proc = start_service(tmp_path, cell_file, notify)
    try:
        notify.wait_for("READY", 60.0)
        assert request(sock, {"op": "command", "command": "reset"})["ok"]
        time.sleep(0.2)
        assert request(sock, {"op": "command", "command": "start"})["ok"]
        deadline = time.monotonic() + 30
        while sim.status()[2] < 30:
            assert time.monotonic() < deadline, "the line never fed parts"
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=30)
    finally:
        _stop(proc, signal.SIGKILL)
        notify.close()
    out = (tmp_path / "service.log").read_text()
    assert proc.returncode == 0, out[-2000:]
    assert "stopping: draining" in out and "Traceback" not in out
    assert not list((tmp_path / "data" / "var" / "journal").glob("*.jsonl")), "every journaled part recorded"
