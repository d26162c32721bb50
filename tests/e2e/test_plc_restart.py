"""A PLC restart mid-run on the simulated line, over S7 and Modbus, scored against ground truth.

After a restart the PLC numbers its parts from 1 again: the cell records them in a new epoch and
the score judges each physical part by (epoch, id). Parts in the cell at the restart are recorded
without a disposition (alarm `plc_restarted`); the restarted PLC rejects the ones it can still
reach (`plc_restart_rejects`). Nothing lost, nothing misrouted, nothing passed without a verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.contract import AlarmCode
from controller.core.packml import Command, State
from simulators.scorer import load_run
from tests.e2e.test_line import ROOT, run, until

PARTS = 300


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cell", ["demo-cell.yaml", "demo-cell-modbus.yaml"])
def test_a_plc_restart_loses_and_misroutes_nothing_and_explains_every_part(tmp_path: Path, cell: str) -> None:
    seen: dict[str, Any] = {}

    async def scenario(sim: Any, service: Any) -> None:
        seen["restarted"] = await until(lambda: AlarmCode.PLC_RESTARTED in service.core.alarms, 30)
        await until(lambda: service.core.state is State.HELD, 5)
        seen["unhold"] = service.command(Command.UNHOLD)  # the operator, once the alarm is seen
        seen["execute"] = await until(lambda: service.core.state is State.EXECUTE, 5)

    r = run(
        tmp_path,
        scenario,
        parts=PARTS,
        cameras=3,
        cell=ROOT / "recipes/cells" / cell,
        faults=("plc:restart@6",),
    )
    print(cell, json.dumps(seen), json.dumps({k: v for k, v in r.items() if k != "counters"}))
    assert seen["restarted"] and seen["unhold"] is None and seen["execute"]
    assert (r["parts"], r["records"], r["lost"], r["misrouted"]) == (PARTS, PARTS, 0, 0)
    assert r["passed_without_verdict"] == 0
    assert r["passed"] + r["rejected"] == PARTS

    records = load_run(Path(r["database"]), r["run_id"])
    assert {epoch for epoch, _ in records} == {0, 1}, "the parts after the restart are a new epoch"
    orphans = [rec for rec in records.values() if rec["kicked"] is None]
    # Every part has its PLC's disposition, or was in the cell when the PLC restarted and says so.
    assert orphans and all("plc_restarted" in json.loads(rec["alarms"]) for rec in orphans)
    assert all(key[0] == 0 for key, rec in records.items() if rec["kicked"] is None)
    assert 1 <= r["plc_restart_rejects"] <= len(orphans) <= 14  # the cell holds at most 14 parts
    # Inspection resumed on the restarted PLC's counts: its parts pass again.
    assert any(
        rec["verdict"] == "PASS" and rec["kicked"] == 0 for (epoch, _), rec in records.items() if epoch == 1
    )
