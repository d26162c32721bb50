"""Issue 15, items 1 and 2: one recipe per name and number, looked up the same way everywhere,
and validated against the cell that is configured, never silently against the demo cell."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.cli import main
from controller.config import load_cell_config, load_recipe

ROOT = Path(__file__).resolve().parents[2]
CELL = ROOT / "recipes/cells/demo-cell.yaml"
GOOD = (ROOT / "recipes/plate-4h.yaml").read_text()


@pytest.fixture(autouse=True)
def _no_installed_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing configured unless a test says so: no environment, no /etc/inspection-cell."""
    import controller.cli as cli

    for var in ("CELL_CONFIG", "CELL_RECIPES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(cli, "INSTALLED_CELL", tmp_path / "etc" / "cell.yaml")
    monkeypatch.setattr(cli, "INSTALLED_RECIPES", tmp_path / "etc" / "recipes")


def folder_with(tmp_path: Path, **extra: str) -> Path:
    """The shipped recipes (models linked) plus `extra` files by stem."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    for p in (ROOT / "recipes").glob("*.yaml"):
        shutil.copy(p, folder / p.name)
    (folder / "models").symlink_to(ROOT / "recipes/models")
    for stem, text in extra.items():
        (folder / f"{stem}.yaml").write_text(text)
    return folder


SAME_NUMBER = GOOD.replace("name: plate-4h", "name: plate-4h-copy")  # number 1, as plate-4h
SAME_NAME = GOOD.replace("number: 1", "number: 7")  # name plate-4h, as plate-4h


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return rc, text


# ------------------------------------------------------------------ item 1: duplicates are errors
@pytest.mark.parametrize("text", [SAME_NUMBER, SAME_NAME], ids=["same number", "same name"])
def test_validate_names_both_files_of_a_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    folder = folder_with(tmp_path, copy=text)
    rc, out = run(["recipe", "validate", "--cell", str(CELL), str(folder / "copy.yaml")], capsys)
    assert rc == 1, out
    (line,) = [ln for ln in out.splitlines() if "copy.yaml" in ln]
    assert "plate-4h.yaml" in line, line
    rc, out = run(["recipe", "validate", "--cell", str(CELL), str(folder / "plate-4h-long.yaml")], capsys)
    assert rc == 0, out  # a recipe with its own name and number is not held up by the others


def test_list_marks_duplicates_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = folder_with(tmp_path, copy=SAME_NUMBER)
    rc, out = run(["recipe", "list", str(folder)], capsys)
    assert rc == 1
    rows = [ln for ln in out.splitlines() if not ln.startswith("cellctl")]
    for name in ("copy.yaml", "plate-4h.yaml"):
        (row,) = [ln for ln in rows if f" {name}" in ln]
        assert "DUPLICATE" in row, row
    assert any("copy.yaml" in ln and "plate-4h.yaml" in ln for ln in out.splitlines()), out


def test_start_up_refuses_a_folder_with_duplicates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from controller.daemon import RunOptions, run_service

    folder = folder_with(tmp_path, copy=SAME_NUMBER)
    opts = RunOptions(CELL, "plate-4h-long", folder, tmp_path / "data", tmp_path / "run" / "cell.sock")
    with caplog.at_level(logging.INFO):
        assert run_service(opts) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "copy.yaml" in errors[0] and "plate-4h.yaml" in errors[0], errors
    assert "camera" not in errors[0]  # refused before anything opened


@pytest.fixture
def service(tmp_path: Path) -> Any:
    from controller.service import CellService

    folder = folder_with(tmp_path, copy=SAME_NUMBER)
    cell = load_cell_config(CELL)
    cell = cell.model_copy(update={"cameras": cell.cameras[:3]})
    recipe = load_recipe(folder / "plate-4h-long.yaml")
    cams = {c.name: SimpleNamespace(stats=SimpleNamespace(connected=True)) for c in cell.cameras}
    svc = CellService(cell, recipe, folder, SimpleNamespace(), cams, "test-run", tmp_path / "data")  # type: ignore[arg-type]
    svc.store.start({"cell": cell.name, "recipe": recipe.name})
    yield svc
    for stack in svc.stacks.values():
        if stack.worker.alive:
            stack.worker.stop()
    svc.store.close()


def _audit(svc: Any) -> list[tuple[str, str, str, str]]:
    svc.store.close()
    with sqlite3.connect(svc.store.database) as db:
        return db.execute("SELECT source, to_recipe, result, reason FROM audit ORDER BY rowid").fetchall()


def test_changeover_to_a_duplicate_is_refused_audited_and_names_both(service: Any) -> None:
    from controller.contract import RecipeResult

    async def go() -> list[tuple[RecipeResult, str]]:
        return [
            await service.activate_recipe("api", name="plate-4h"),
            await service.activate_recipe("plc", number=1),
            await service.activate_recipe("api", name="1"),
            await service.activate_recipe("api", name="plate-4h-long.yaml"),
        ]

    answers = asyncio.run(go())
    for result, reason in answers[:3]:
        assert result is RecipeResult.INVALID, (result, reason)
        assert "copy.yaml" in reason and "plate-4h.yaml" in reason, reason
    assert answers[3][0] is RecipeResult.ACTIVE, answers[3]  # by file name, not held up by the others
    assert service.recipe.name == "plate-4h-long"
    assert [(a[0], a[2]) for a in _audit(service)] == [
        ("api", "INVALID"),
        ("plc", "INVALID"),
        ("api", "INVALID"),
        ("api", "ACTIVE"),
    ]


def test_changeover_by_number_or_file_name_and_did_you_mean(tmp_path: Path) -> None:
    from controller.contract import RecipeResult
    from controller.service import CellService

    folder = folder_with(tmp_path)
    cell = load_cell_config(CELL)
    cell = cell.model_copy(update={"cameras": cell.cameras[:3]})
    cams = {c.name: SimpleNamespace(stats=SimpleNamespace(connected=True)) for c in cell.cameras}
    svc = CellService(
        cell, load_recipe(folder / "plate-4h.yaml"), folder, SimpleNamespace(), cams, "r", tmp_path / "d"
    )  # type: ignore[arg-type]
    svc.store.start({"cell": cell.name, "recipe": "plate-4h"})
    try:

        async def go() -> list[tuple[RecipeResult, str]]:
            return [
                await svc.activate_recipe("api", name="plate4h-long"),
                await svc.activate_recipe("api", name="2"),
                await svc.activate_recipe("api", name=str(folder / "plate-4h.yaml")),
                await svc.activate_recipe("api", name=str(ROOT / "recipes/plate-4h-long.yaml")),
            ]

        typo, by_number, by_path, outside = asyncio.run(go())
    finally:
        for stack in svc.stacks.values():
            if stack.worker.alive:
                stack.worker.stop()
        svc.store.close()
    assert typo[0] is RecipeResult.UNKNOWN_RECIPE  # asked by name: not the PLC's "unknown number"
    assert "did you mean 'plate-4h-long'?" in typo[1] and "plate-4h (1)" in typo[1], typo
    assert by_number[0] is RecipeResult.ACTIVE, by_number
    assert by_path[0] is RecipeResult.ACTIVE, by_path
    assert outside[0] is RecipeResult.UNKNOWN_RECIPE and "not in the recipe folder" in outside[1], outside
    assert "then activate it by name" in outside[1], outside


def test_mistyped_name_at_start_up_and_in_the_demo_gets_did_you_mean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.daemon import RunOptions, run_service

    folder = folder_with(tmp_path)
    opts = RunOptions(CELL, "plate4h", folder, tmp_path / "data", tmp_path / "run" / "cell.sock")
    with caplog.at_level(logging.INFO):
        assert run_service(opts) == 2  # no such recipe: a usage error
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "did you mean 'plate-4h'?" in errors[0] and "plate-4h-long (2)" in errors[0], errors
    rc, out = run(["demo", "--recipe", "plate4h", "--headless", "--parts", "5"], capsys)
    assert rc != 0 and "did you mean 'plate-4h'?" in out, out


def test_names_numbers_and_paths_in_validate_and_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = folder_with(tmp_path)
    monkeypatch.setenv("CELL_RECIPES", str(folder))
    monkeypatch.setenv("CELL_CONFIG", str(CELL))
    for ref in ("plate-4h", "1", "plate-4h.yaml", str(folder / "plate-4h.yaml")):
        rc, out = run(["recipe", "validate", ref], capsys)
        assert rc == 0 and "valid for cell demo-cell" in out, (ref, out)
    rc, out = run(["recipe", "diff", "plate-4h", "2"], capsys)
    assert "reject.uncertain_band: 0.0 -> 0.1" in out, out
    rc, out = run(["recipe", "validate", "plate4h"], capsys)
    assert rc == 2 and "did you mean 'plate-4h'?" in out, out


# ----------------------------------------------------------- item 2: validate against the right cell
def test_validate_without_a_cell_says_it_cannot_check_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = run(["recipe", "validate", str(ROOT / "recipes/plate-4h.yaml")], capsys)
    assert rc != 0, out
    assert "demo-cell" not in out and "valid for cell" not in out, out
    assert "cannot check" in out and "--cell" in out, out


def _small_cell(tmp_path: Path) -> Path:
    """A cell with only cameras top and left (no `right`)."""
    text = CELL.read_text()
    lines = [ln for ln in text.splitlines() if "name: right" not in ln and "name: front" not in ln]
    p = tmp_path / "small-cell.yaml"
    p.write_text("\n".join(lines).replace("name: demo-cell", "name: small-cell") + "\n")
    assert [c.name for c in load_cell_config(p).cameras] == ["top", "left"], "edit the test's cell"
    return p


def test_validate_uses_the_cell_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELL_CONFIG", str(_small_cell(tmp_path)))
    rc, out = run(["recipe", "validate", str(ROOT / "recipes/plate-4h.yaml")], capsys)
    assert rc == 1 and "cameras.right: expected a camera of cell small-cell" in out, out


def test_validate_uses_the_installed_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import controller.cli as cli

    monkeypatch.setattr(cli, "INSTALLED_CELL", _small_cell(tmp_path))
    rc, out = run(["recipe", "validate", str(ROOT / "recipes/plate-4h.yaml")], capsys)
    assert rc == 1 and "expected a camera of cell small-cell" in out, out


def test_list_uses_the_configured_folder_or_says_none_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out = run(["recipe", "list"], capsys)
    assert rc != 0 and "plate-4h" not in out and "CELL_RECIPES" in out, out
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "only.yaml").write_text(GOOD.replace("name: plate-4h", "name: only"))
    monkeypatch.setenv("CELL_RECIPES", str(folder))
    rc, out = run(["recipe", "list"], capsys)
    assert rc == 0 and "only" in out and "plate-4h" not in out, out


def test_cli_activate_says_did_you_mean_and_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.api import ApiLimits, ControlApi
    from controller.service import CellService

    bad = GOOD.replace("name: plate-4h", "name: bad").replace("number: 1", "number: 9")
    bad = bad.replace("  spot: 0.5", "  spot: 1.5").replace("rule: any_fail", "rule: k_of_n\n  k: 5")
    folder = folder_with(tmp_path, bad=bad)
    cell = load_cell_config(CELL)
    cell = cell.model_copy(update={"cameras": cell.cameras[:3]})
    cams = {c.name: SimpleNamespace(stats=SimpleNamespace(connected=True)) for c in cell.cameras}
    svc = CellService(
        cell, load_recipe(folder / "plate-4h.yaml"), folder, SimpleNamespace(), cams, "r", tmp_path / "d"
    )  # type: ignore[arg-type]
    svc.store.start({"cell": cell.name, "recipe": "plate-4h"})
    sock = tmp_path / "api" / "cell.sock"

    async def go() -> list[int]:
        api = ControlApi(svc, sock, ApiLimits(activate_per_s=100, activate_burst=100))
        await api.start()
        try:
            return [
                await asyncio.to_thread(main, ["recipe", "activate", name, "--socket", str(sock)])
                for name in ("plate4h-long", "bad")
            ]
        finally:
            await api.stop()

    try:
        codes = asyncio.run(go())
    finally:
        for stack in svc.stacks.values():
            if stack.worker.alive:
                stack.worker.stop()
        svc.store.close()
    err = capsys.readouterr().err.splitlines()
    assert codes == [2, 1]  # no such recipe is a usage error; an invalid one fails
    assert err[0].startswith("cellctl recipe activate: no recipe 'plate4h-long'"), err
    assert "did you mean 'plate-4h-long'?" in err[0] and "unknown_" not in err[0], err
    assert err[1] == "cellctl recipe activate: bad refused (invalid):", err
    assert len(err) == 4 and all(ln.startswith(f"  {folder / 'bad.yaml'}:") for ln in err[2:]), err


def test_start_up_logs_every_problem_of_an_invalid_recipe_on_its_own_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from controller.daemon import RunOptions, run_service

    bad = GOOD.replace("name: plate-4h", "name: bad").replace("number: 1", "number: 9")
    bad = bad.replace("  top:   {", "  rear:  {").replace("  left:  {", "  back:  {")
    folder = folder_with(tmp_path, bad=bad)
    opts = RunOptions(CELL, "bad", folder, tmp_path / "data", tmp_path / "run" / "cell.sock")
    with caplog.at_level(logging.INFO):
        assert run_service(opts) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors[0] == f"cannot start: recipe {folder / 'bad.yaml'} is invalid (2 problems):", errors
    assert ["cameras.rear" in errors[1], "cameras.back" in errors[2]] == [True, True], errors
    assert all("\n" not in e for e in errors), errors
