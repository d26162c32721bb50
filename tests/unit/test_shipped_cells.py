"""The shipped cell configs agree with themselves: no pairing warning at start, and the demo
line's parts never come closer than the cell says they can (issue 15, item 1)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controller.config import CellConfig, load_cell_config, load_recipe
from controller.contract import area_layout
from controller.core.cell import CellCore
from controller.service.generations import build_plan
from tests.plcimage import PlcImage

ROOT = Path(__file__).resolve().parents[2]
CELLS = sorted((ROOT / "recipes" / "cells").glob("*.yaml"))
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
DOCUMENTED_PPM = (1500.0,)  # the README's measured runs; the cell's own default is added below


def _start(cell: CellConfig, recipe_path: Path) -> tuple[CellCore, float]:
    """The core after 250 reads of a PLC on the simulated belt, as the demo's first half second."""
    core = CellCore(build_plan(cell, load_recipe(recipe_path)), area_layout(cell.plc.ring_size))
    plc = PlcImage(cell.plc.ring_size)
    sim = cell.simulation
    speed = sim.belt_speed_mm_s * cell.encoder.counts_per_mm  # counts/s
    cycle, scan = cell.plc.cycle_ms / 1000.0, sim.plc_scan_ms / 1000.0
    t = 0.0
    for _ in range(250):
        t += cycle
        plc.encoder(sim.encoder_start + int((t // scan) * scan * speed))  # written at the PLC's scan
        core.on_plc_inputs(plc.snapshot(), t)
    return core, t


@pytest.mark.parametrize("recipe_path", RECIPES, ids=lambda p: p.stem)
@pytest.mark.parametrize("cell_path", CELLS, ids=lambda p: p.stem)
def test_a_shipped_cell_starts_without_a_pairing_warning(
    cell_path: Path, recipe_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cell = load_cell_config(cell_path)
    with caplog.at_level(logging.INFO, logger="controller.core.cell"):
        core, t = _start(cell, recipe_path)
    said = [r for r in caplog.records if "frame pairing by position" in r.getMessage()]
    assert said, "the pairing margin was not checked"
    assert [r.getMessage() for r in said if r.levelno >= logging.WARNING] == []
    # The demo line's closest parts, at its default and documented rates, are no closer than the
    # cell's minimum pitch, which is wider than the ambiguity window: no NO_DECISION from pitch.
    found = core.history.locate(t)
    assert found is not None
    window_mm = (core.plan.match_tolerance + found[1]) / cell.encoder.counts_per_mm
    sim = cell.simulation
    for ppm in (sim.parts_per_min, *DOCUMENTED_PPM):
        closest = sim.belt_speed_mm_s * 60.0 / ppm * (1.0 - sim.spacing_jitter)
        assert closest >= cell.min_part_pitch_mm > 2 * window_mm, (ppm, closest, window_mm)
