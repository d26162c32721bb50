"""Model generations with the real demo model: build, activate, retire, stop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import CellConfig, load_cell_config
from controller.inference.runner import ModelLoadError
from controller.recipes import load_recipe
from controller.service.generations import ModelGenerations, build_plan

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"


@pytest.fixture
def cell() -> CellConfig:
    cell = load_cell_config(RECIPES / "cells/demo-cell.yaml")
    return cell.model_copy(update={"cameras": cell.cameras[:3]})


@pytest.fixture
def models(cell: CellConfig, tmp_path: Path) -> Iterator[ModelGenerations]:
    gens = ModelGenerations(cell, load_recipe(RECIPES / "plate-4h.yaml"), RECIPES, tmp_path, lambda _: None)
    yield gens
    asyncio.run(gens.stop_all())


def test_the_first_generation_is_built_active_and_started_by_start(models: ModelGenerations) -> None:
    first = models.active
    assert first.plan.generation == 0 and models.stacks == {0: first}
    assert first.recipe.name == "plate-4h"
    assert first.plan.recipe_name == "plate-4h" and first.plan.model_hash == first.runner.info.sha256
    assert first.plan.recipe_hash == first.recipe_hash
    assert first.plan.camera_offsets == build_plan(models.cell, first.recipe).camera_offsets
    assert not first.worker.alive  # built and warmed, not running until the cell runs
    models.start()
    assert first.worker.alive and "infer-0" in _threads()


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_a_new_generation_runs_beside_the_old_until_no_part_needs_it(
    models: ModelGenerations, caplog: pytest.LogCaptureFixture
) -> None:
    models.start()
    first = models.active
    new = models.build(load_recipe(RECIPES / "plate-4h-long.yaml"), RECIPES)
    assert new.plan.generation == 1
    assert models.active is first and 1 not in models.stacks  # built, not yet active
    models.activate(new)
    assert models.active is new and models.stacks == {0: first, 1: new} and new.worker.alive
    assert {"infer-0", "infer-1"} <= _threads()
    assert models.of(0) is first and models.of(1) is new and models.of(99) is new

    async def go() -> None:
        await models.retire({0})  # a part still judged by the first recipe
        assert models.stacks == {0: first, 1: new} and first.worker.alive
        await models.retire(set())
        assert models.stacks == {1: new} and not first.worker.alive
        await models.retire(set())  # the active one is never retired
        assert models.stacks == {1: new} and new.worker.alive

    with caplog.at_level(logging.INFO, logger="controller.service"):
        asyncio.run(go())
    assert [r.getMessage() for r in caplog.records if "retired" in r.getMessage()] == [
        "recipe plate-4h (generation 0) retired"
    ]
    asyncio.run(models.stop_all())
    assert not new.worker.alive


def test_a_model_that_fails_to_load_takes_no_generation(models: ModelGenerations, tmp_path: Path) -> None:
    broken = load_recipe(RECIPES / "plate-4h-long.yaml")
    broken = broken.model_copy(update={"model": broken.model.model_copy(update={"path": "missing.onnx"})})
    with pytest.raises((ModelLoadError, OSError, RuntimeError)):
        models.build(broken, tmp_path)
    assert models.build(load_recipe(RECIPES / "plate-4h-long.yaml"), RECIPES).plan.generation == 1
