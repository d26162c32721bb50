"""Scores a run: every physical disposition (simulator) against ground truth and the cell's records."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from simulators.line import Outcome


def load_records(database: Path, run_id: str) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM parts WHERE run_id = ?", (run_id,)).fetchall()
    return {int(r["part_id"]): dict(r) for r in rows}


def score(
    outcomes: list[Outcome], records: dict[int, dict[str, Any]], dropped_writes: int = 0
) -> dict[str, Any]:
    """The demo's JSON figures. `misrouted`: kick differs from what the cell's record says was intended."""
    kicked = sum(o.kicked for o in outcomes)
    escapes = sum(o.defective and not o.removed for o in outcomes)
    false_rejects = sum((not o.defective) and o.kicked for o in outcomes)
    lost = [o.part_id for o in outcomes if o.part_id not in records]
    misrouted = 0
    for o in outcomes:
        r = records.get(o.part_id)
        if r is None:
            continue
        if r["expected_kick"] is None or bool(r["expected_kick"]) != o.kicked:
            misrouted += 1
    # A part left on the line must have had a PASS the PLC accepted in time: anything else is a breach.
    passed_without_verdict = sum(
        1
        for o in outcomes
        if not o.kicked
        and ((r := records.get(o.part_id)) is None or r["verdict"] != "PASS" or r["ack"] != "ACCEPTED")
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
