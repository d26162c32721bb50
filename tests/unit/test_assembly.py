"""One place builds a cell: the link and cameras from the driver registry, then the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import controller.assembly as assembly
from controller.config import load_cell_config, load_recipe

ROOT = Path(__file__).resolve().parents[2]
CELL = ROOT / "recipes/cells/demo-cell-modbus.yaml"
RECIPE = ROOT / "recipes/plate-4h.yaml"


class FakeCamera:
    def __init__(self, name: str) -> None:
        self.name, self.stopped = name, False

    def stop(self) -> None:
        self.stopped = True


def test_the_cell_is_built_from_its_config_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drivers.modbus_link import ModbusPlcLink
    from drivers.socket_camera import SocketCamera

    built: list[tuple[Any, ...]] = []

    def record(*args: Any) -> str:
        built.append(args)
        return "service"

    monkeypatch.setattr(assembly, "CellService", record)
    cell = load_cell_config(CELL)
    cams = tuple(c.model_copy(update={"address": str(tmp_path / f"{c.name}.sock")}) for c in cell.cameras)
    cell = cell.model_copy(update={"cameras": cams})
    recipe = load_recipe(RECIPE)
    service: Any = assembly.build_cell(cell, recipe, RECIPE.parent, tmp_path, run_id="r1")
    assert service == "service"
    (_, _, folder, link, cameras, run_id, data_dir, drain) = built[0]
    assert isinstance(link, ModbusPlcLink) and link.port == 502
    assert sorted(cameras) == ["front", "left", "right", "top"]
    assert all(isinstance(c, SocketCamera) for c in cameras.values())
    assert (folder, run_id, data_dir, drain) == (RECIPE.parent, "r1", tmp_path, 5.0)
    for cam in cameras.values():
        cam.stop()


def test_cameras_it_opened_are_closed_when_the_service_cannot_be_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = {"top": FakeCamera("top"), "left": FakeCamera("left")}
    monkeypatch.setattr(assembly, "make_cameras", lambda cell, recipe: opened)

    def refuse(*args: Any) -> None:
        raise ValueError("recipe plate-4h needs cameras ['right'] that the cell does not provide")

    monkeypatch.setattr(assembly, "CellService", refuse)
    cell, recipe = load_cell_config(CELL), load_recipe(RECIPE)
    with pytest.raises(ValueError, match="needs cameras"):
        assembly.build_cell(cell, recipe, RECIPE.parent, tmp_path)
    assert all(c.stopped for c in opened.values())
    # Cameras the caller brought are the caller's to close.
    top = FakeCamera("top")
    with pytest.raises(ValueError):
        assembly.build_cell(cell, recipe, RECIPE.parent, tmp_path, cameras={"top": top})  # type: ignore[arg-type, dict-item]
    assert not top.stopped
