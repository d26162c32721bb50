"""Scores a run: every physical disposition (simulator) against ground truth and the cell's records.

A part is known by its PLC epoch and id: after a PLC restart ids start again at 1, and the record
store keeps each epoch under a run id of its own (`RUN`, `RUN+1`, ...; `RecordStore.segment`).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from simulators.line import Outcome

#: A part of a run: (PLC epoch, part id).
PartKey: TypeAlias = tuple[int, int]


def load_records(database: Path, run_id: str) -> dict[int, dict[str, Any]]:
    """The records of one run id (one PLC epoch), by part id."""
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM parts WHERE run_id = ?", (run_id,)).fetchall()
    return {int(r["part_id"]): dict(r) for r in rows}


def load_run(database: Path, run_id: str) -> dict[PartKey, dict[str, Any]]:
    """Every record of a run, of every PLC epoch (`run_id`, `run_id+1`, ...), by (epoch, part id)."""
    prefix = f"{run_id}+"
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM parts WHERE run_id = ? OR substr(run_id, 1, ?) = ?", (run_id, len(prefix), prefix)
        ).fetchall()
    out: dict[PartKey, dict[str, Any]] = {}
    for r in rows:
        rid = str(r["run_id"])
        tail = rid[len(prefix) :]
        if rid == run_id:
            out[(0, int(r["part_id"]))] = dict(r)
        elif tail.isdigit():
            out[(int(tail), int(r["part_id"]))] = dict(r)
    return out


def record_of(o: Outcome, records: dict[PartKey, dict[str, Any]]) -> dict[str, Any] | None:
    """The part's own record: same epoch and id, and (where both are known) the same sensor count."""
    r = records.get((o.epoch, o.part_id))
    if r is None or (o.sensor_count and r.get("sensor_count") and int(r["sensor_count"]) != o.sensor_count):
        return None
    return r


def routing(
    mine: list[tuple[Outcome, dict[str, Any] | None]],
) -> tuple[list[tuple[Outcome, dict[str, Any]]], int]:
    """The parts misrouted (kicked other than their record says the cell intended), each with its
    record, and how many the restarted PLC rejected as the contract asks. `mine`: each outcome
    with its own record (None: lost, judged elsewhere)."""
    wrong: list[tuple[Outcome, dict[str, Any]]] = []
    restart_rejects = 0
    for o, r in mine:
        if r is None:
            continue
        if o.restart_reject:  # explained only by a record that knows the PLC restarted
            if r["kicked"] is None and "plc_restarted" in json.loads(r["alarms"] or "[]"):
                restart_rejects += 1
            else:
                wrong.append((o, r))
        elif r["expected_kick"] is None or bool(r["expected_kick"]) != o.kicked:
            wrong.append((o, r))
    return wrong, restart_rejects


def score(
    outcomes: list[Outcome], records: dict[PartKey, dict[str, Any]], dropped_writes: int = 0
) -> dict[str, Any]:
    """The demo's JSON figures. `misrouted`: kick differs from what the cell's record says was intended.

    A part the restarted PLC rejected (in the cell at a PLC restart, before the reject station) is
    counted in `plc_restart_rejects`: the PLC no longer held its verdict and did what the contract
    asks. Its record must say so (no disposition, `plc_restarted`); any other is misrouted.
    """
    kicked = sum(o.kicked for o in outcomes)
    escapes = sum(o.defective and not o.removed for o in outcomes)
    false_rejects = sum((not o.defective) and o.kicked for o in outcomes)
    mine = [(o, record_of(o, records)) for o in outcomes]
    lost = [o for o, r in mine if r is None]
    wrong, restart_rejects = routing(mine)
    misrouted = len(wrong)
    # A part left on the line must have had a PASS the PLC accepted in time: anything else is a breach.
    passed_without_verdict = sum(
        1 for o, r in mine if not o.kicked and (r is None or r["verdict"] != "PASS" or r["ack"] != "ACCEPTED")
    )
    verdicts = Counter(r["verdict"] for r in records.values())
    reasons: Counter[str] = Counter()
    for r in records.values():
        if r["verdict"] == "FAIL":
            for reason in json.loads(r["reasons"]):
                reasons[reason.split(":", 1)[1]] += 1
        elif r["verdict"] == "NO_DECISION":
            reasons[f"no_decision:{r['reason']}"] += 1
    lat = np.array([r["latency_ms"] for r in records.values() if r["latency_ms"] is not None], dtype=float)
    defective = sum(o.defective for o in outcomes)
    good = len(outcomes) - defective
    return {
        "parts": len(outcomes),
        "passed": len(outcomes) - kicked,
        "rejected": kicked,
        "defective": defective,
        "escapes": escapes,
        "false_rejects": false_rejects,
        "escape_rate": escapes / defective if defective else 0.0,
        "false_reject_rate": false_rejects / good if good else 0.0,
        "no_decision": verdicts.get("NO_DECISION", 0),
        "misrouted": misrouted,
        "plc_restart_rejects": restart_rejects,
        "lost": len(lost),
        "passed_without_verdict": passed_without_verdict,
        "records": len(records),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            "p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
            "max": round(float(lat.max()), 3) if lat.size else None,
        },
        "rejects_by_reason": dict(sorted(reasons.items())),
        "verdict_repeats": sum(max(0, (r["attempts"] or 0) - 1) for r in records.values()),
        "dropped_verdict_writes": dropped_writes,
    }
