"""One place builds a cell: a cell config and a recipe in, the service with its PLC link and
cameras out. `cellctl run`, `cellctl demo` and the tests all build the cell here."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from controller.config import CellConfig, Recipe
from controller.devices import make_cameras, make_link
from controller.interfaces import Camera
from controller.service import CellService


def new_run_id() -> str:
    """A run's id: its start time (local, to the second) and a random suffix."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def build_cell(
    cell: CellConfig,
    recipe: Recipe,
    recipe_dir: Path,
    data_dir: Path,
    *,
    run_id: str | None = None,
    cameras: dict[str, Camera] | None = None,
    drain_timeout_s: float = 5.0,
) -> CellService:
    """The cell's service, its link and cameras opened through the driver registry
    (`controller.devices`); blocking (cameras open, the model loads and warms up).

    `cameras`: cameras the caller opened itself (the demo's in-process simulated line), instead
    of those the cell config names. Cameras opened here are closed again when the service cannot
    be built. Raises CameraError, ModelLoadError and the like.
    """
    opened = make_cameras(cell, recipe) if cameras is None else {}
    try:
        return CellService(
            cell, recipe, recipe_dir, make_link(cell), cameras if cameras is not None else opened,
            run_id or new_run_id(), data_dir, drain_timeout_s,
        )  # fmt: skip
    except BaseException:
        for cam in opened.values():
            cam.stop()
        raise
