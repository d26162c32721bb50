"""Asking for the recipe that is already active (issue 15, item 4): a no-op that answers
success with a notice, for the API, the CLI and the PLC alike; a recipe whose file (or model)
changed on disk is reloaded, and the answer says so.

The changeover runs against stand-ins for the core, the model generations and the record store
(no model is loaded, no PLC or camera opened); the recipe files are the shipped ones, copied.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.cli import main
from controller.config import Recipe, content_hash, load_cell_config, load_recipe
from controller.contract import RecipeResult
from controller.events import Event
from controller.inference.runner import file_sha256
from controller.service.changeover import Changeover

ROOT = Path(__file__).resolve().parents[2]


class Core:
    def __init__(self) -> None:
        self.activated: list[object] = []
        self.answers: list[tuple[int, RecipeResult]] = []

    def recipe_refusal(self) -> str | None:
        return None

    def activate(self, plan: object) -> int:
        self.activated.append(plan)
        return 41

    def answer_recipe(self, seq: int, result: RecipeResult) -> None:
        self.answers.append((seq, result))


class Models:
    """The active generation; `build` makes one without loading a model."""

    def __init__(self, recipe: Recipe, model_sha: str) -> None:
        self.active = self._stack(recipe, model_sha)
        self.built: list[str] = []

    @staticmethod
    def _stack(recipe: Recipe, model_sha: str) -> Any:
        info = SimpleNamespace(provider="CPUExecutionProvider", sha256=model_sha)
        return SimpleNamespace(
            recipe=recipe, recipe_hash=content_hash(recipe), plan=object(), runner=SimpleNamespace(info=info)
        )

    def build(self, recipe: Recipe, recipe_dir: Path) -> Any:
        self.built.append(recipe.name)
        return self._stack(recipe, file_sha256((recipe_dir / recipe.model.path).resolve()))

    def activate(self, stack: Any) -> None:
        self.active = stack


class Store:
    def __init__(self) -> None:
        self.audit: list[tuple[str, ...]] = []

    def put_audit(self, *row: str) -> None:
        self.audit.append(row)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "recipes"
    out.mkdir()
    for p in (ROOT / "recipes").glob("*.yaml"):
        shutil.copy(p, out / p.name)
    shutil.copytree(ROOT / "recipes" / "models", out / "models")
    return out


def changeover(folder: Path, events: list[Event] | None = None) -> tuple[Changeover, Core, Models, Store]:
    cell = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    recipe = load_recipe(folder / "plate-4h.yaml")
    core, store = Core(), Store()
    models = Models(recipe, file_sha256(folder / recipe.model.path))
    cams: dict[str, Any] = {c.name: SimpleNamespace() for c in cell.cameras}
    ch = Changeover(cell, folder, cams, core, models, store, events.append if events is not None else None)  # type: ignore[arg-type]
    return ch, core, models, store


def test_the_active_recipe_again_is_a_success_that_changes_nothing(folder: Path) -> None:
    events: list[Event] = []
    ch, core, models, store = changeover(folder, events)
    before = models.active
    result, reason = asyncio.run(ch.activate("api", name="plate-4h"))
    assert result is RecipeResult.ACTIVE
    assert reason.startswith("plate-4h is already active") and reason.endswith("; nothing to do"), reason
    assert models.built == [] and core.activated == [] and models.active is before
    assert [r[1:5] for r in store.audit] == [("plate-4h", before.recipe_hash, "plate-4h", before.recipe_hash)]
    assert store.audit[0][5:] == ("ACTIVE", reason)  # audited and published like every attempt
    assert len(events) == 1 and getattr(events[0], "reason", None) == reason


def test_the_plc_asking_for_the_active_recipe_gets_its_ack_and_success(folder: Path) -> None:
    ch, core, models, _ = changeover(folder)

    async def go() -> None:
        ch.request_from_plc(7, 1)  # plate-4h is number 1
        for _ in range(200):
            if core.answers:
                return
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert core.answers == [(7, RecipeResult.ACTIVE)] and models.built == [] and core.activated == []


def test_a_recipe_changed_on_disk_is_reloaded_and_the_answer_says_so(folder: Path) -> None:
    ch, core, models, _ = changeover(folder)
    old = models.active.recipe_hash
    path = folder / "plate-4h.yaml"
    path.write_text(path.read_text().replace("scratch: 0.5", "scratch: 0.45"))
    result, reason = asyncio.run(ch.activate("api", name="plate-4h"))
    assert result is RecipeResult.ACTIVE and models.built == ["plate-4h"] and len(core.activated) == 1
    new = models.active.recipe_hash
    assert new != old
    assert reason.startswith(f"reloads plate-4h, changed on disk ({old[:12]} → {new[:12]}); judges parts"), (
        reason
    )


def test_a_recipe_whose_model_changed_on_disk_is_reloaded(folder: Path) -> None:
    ch, _, models, _ = changeover(folder)
    model = folder / load_recipe(folder / "plate-4h.yaml").model.path
    model.write_bytes(model.read_bytes())  # the same bytes: still the active model
    result, reason = asyncio.run(ch.activate("api", name="plate-4h"))
    assert result is RecipeResult.ACTIVE and "nothing to do" in reason and models.built == []
    models.active.runner.info.sha256 = "0" * 64  # as if the file had been retrained since
    result, reason = asyncio.run(ch.activate("api", name="plate-4h"))
    assert result is RecipeResult.ACTIVE and models.built == ["plate-4h"], reason
    assert reason.startswith("reloads plate-4h, its model changed on disk"), reason


@pytest.fixture
def api(folder: Path, tmp_path: Path) -> Iterator[tuple[Path, Models]]:
    """The control API on a socket, its recipe activations going to the changeover."""
    from controller.api import ControlApi

    ch, _, models, _ = changeover(folder)
    facade = SimpleNamespace(activate_recipe=ch.activate, snapshot=None, command=None)
    sock = tmp_path / "api" / "cell.sock"
    loop = asyncio.new_event_loop()
    server = ControlApi(facade, sock)  # type: ignore[arg-type]
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
    thread.start()
    yield sock, models
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(server.stop())
    loop.close()


def test_cellctl_recipe_activate_of_the_active_recipe_says_there_is_nothing_to_do(
    api: tuple[Path, Models], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, models = api
    assert main(["recipe", "activate", "plate-4h", "--socket", str(sock)]) == 0
    out = capsys.readouterr().out
    assert "plate-4h is already active" in out and "nothing to do" in out, out
    assert models.built == []
