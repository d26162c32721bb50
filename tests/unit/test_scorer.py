"""The demo's score over a PLC restart: part ids start again at 1 in a new epoch, stored under the
run id `RUN+N`; every physical part is judged against its own epoch's record, never another's."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from controller.contract import DispositionCause
from simulators.line import Outcome
from simulators.scorer import load_run, score

RUN = "20261126T124143-a00f6b"


def outcome(
    pid: int, kicked: bool, epoch: int = 0, sensor_count: int = 0, restart_reject: bool = False
) -> Outcome:
    cause = DispositionCause.VERDICT_REJECT if kicked else DispositionCause.PASSED
    return Outcome(pid, kicked, (), kicked, kicked, int(cause), 0, epoch, sensor_count, restart_reject)


def record(run: str, pid: int, kicked: bool | None, sensor_count: int = 0, **kw: Any) -> dict[str, Any]:
    passed = kicked is False or kw.get("expected_kick") is False
    row = {
        "run_id": run, "part_id": pid, "sensor_count": sensor_count,
        "verdict": "PASS" if passed else "FAIL", "reason": "none" if passed else "defect",
        "reasons": "[]" if passed else '["defect:scratch"]', "ack": "ACCEPTED",
        "kicked": None if kicked is None else int(kicked), "expected_kick": kicked, "alarms": "[]",
        "latency_ms": 4.0, "attempts": 1,
    }  # fmt: skip
    row.update(kw)
    if row["expected_kick"] is not None:
        row["expected_kick"] = int(row["expected_kick"])
    return row


def write_db(path: Path, rows: list[dict[str, Any]]) -> Path:
    cols = list(rows[0])
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE parts ({', '.join(cols)})")
        db.executemany(
            f"INSERT INTO parts VALUES ({','.join('?' * len(cols))})", [tuple(r.values()) for r in rows]
        )
    return path


def test_a_run_over_a_plc_restart_judges_each_part_by_its_own_epochs_record(tmp_path: Path) -> None:
    # Before the restart parts 1-3 pass; after it the new parts 1-3 are kicked (the cell was held).
    db = write_db(
        tmp_path / "r.sqlite",
        [record(RUN, pid, False) for pid in (1, 2, 3)]
        + [record(f"{RUN}+1", pid, True) for pid in (1, 2, 3)]
        + [record("another-run", 1, True)],
    )
    records = load_run(db, RUN)
    assert set(records) == {(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)}
    outcomes = [outcome(pid, False) for pid in (1, 2, 3)] + [outcome(pid, True, epoch=1) for pid in (1, 2, 3)]
    r = score(outcomes, records)
    assert (r["parts"], r["records"], r["lost"], r["misrouted"]) == (6, 6, 0, 0), r
    assert r["passed_without_verdict"] == 0


def test_a_part_of_a_later_epoch_without_its_record_is_lost_not_paired_with_an_earlier_one() -> None:
    records = {(0, 1): record(RUN, 1, False)}
    r = score([outcome(1, False), outcome(1, True, epoch=1)], records)
    assert (r["lost"], r["misrouted"]) == (1, 0), r


def test_a_record_of_another_part_with_the_same_id_is_not_its_record() -> None:
    records = {(0, 1): record(RUN, 1, False, sensor_count=4_000)}
    r = score([outcome(1, False, sensor_count=9_000)], records)
    assert r["lost"] == 1, r


def test_parts_the_restarted_plc_rejected_are_counted_as_such_never_misrouted() -> None:
    # In the cell when the PLC restarted: the cell had passed it, the PLC forgot the verdict and
    # rejected it; the cell recorded it without a disposition, saying why.
    restarted = {"alarms": json.dumps(["plc_restarted"])}
    records = {
        (0, 7): record(RUN, 7, None, expected_kick=False, **restarted),
        (0, 8): record(
            RUN, 8, None, expected_kick=True, verdict="NO_DECISION", reason="plc_data", **restarted
        ),
        # past the reject station at the restart: it went the way of its accepted PASS
        (0, 6): record(RUN, 6, None, expected_kick=False, **restarted),
    }
    outcomes = [
        outcome(6, False),
        outcome(7, True, restart_reject=True),
        outcome(8, True, restart_reject=True),
    ]
    r = score(outcomes, records)
    assert (r["lost"], r["misrouted"], r["passed_without_verdict"]) == (0, 0, 0), r
    assert r["plc_restart_rejects"] == 2


def test_a_restart_reject_the_cell_recorded_as_passed_is_misrouted() -> None:
    records = {(0, 7): record(RUN, 7, False)}
    r = score([outcome(7, True, restart_reject=True)], records)
    assert r["misrouted"] == 1, r


def test_a_restart_reject_whose_record_does_not_know_of_the_restart_is_misrouted() -> None:
    records = {(0, 7): record(RUN, 7, None, expected_kick=False)}  # no disposition, no plc_restarted
    r = score([outcome(7, True, restart_reject=True)], records)
    assert (r["misrouted"], r["plc_restart_rejects"]) == (1, 0), r
