"""Issue 15: the demo's score says when the cell was not inspecting (an alarm held it) and
counts the parts rejected then apart from the false rejects of the parts it inspected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_held_cell_is_scored_as_not_inspecting_not_as_false_rejects(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--headless", "--json", "--parts", "120",
         "--data-dir", str(tmp_path), "--socket", str(tmp_path / "cell.sock"),
         "--fault", "plc:encoder_step=100000@2"],
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    result = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr[-2000:]
    idle = result["not_inspecting"]
    assert idle["spells"] >= 1 and idle["seconds"] > 0, result
    assert result["rejected_not_inspecting"] > 0, result
    assert result["false_rejects_inspected"] < result["false_rejects"], result
    assert result["belt_run_empty"] is True
    text = subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--headless", "--parts", "120",
         "--data-dir", str(tmp_path / "again"), "--socket", str(tmp_path / "cell.sock"),
         "--fault", "plc:encoder_step=100000@2"],
        capture_output=True, text=True, timeout=170,
    ).stdout  # fmt: skip
    assert "the cell did not inspect" in text and "parts rejected then" in text, text
