"""Issue 15, a new user's findings: every refusal names its subcommand and says where and
why, usage-type errors exit 2, and `recipe list` shows what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "recipes/plate-4h.yaml").read_text()


def one_line(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """The one line a refused command prints, with its exit code (SystemExit or returned)."""
    try:
        rc: Any = main(args)
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert rc == code, (args, rc, lines)
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def folder_with(tmp_path: Path, **recipes: str) -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "models").symlink_to(ROOT / "recipes/models")
    for stem, text in recipes.items():
        (folder / f"{stem}.yaml").write_text(text)
    return folder


# ------------------------------------------------------------------------- 1: activate a path
def test_a_recipe_file_outside_the_folder_says_to_copy_it_in(tmp_path: Path) -> None:
    from controller.recipes import RecipeIndex, RecipeLookupError

    folder = folder_with(tmp_path, **{"plate-4h": GOOD})
    outside = tmp_path / "x" / "copy.yaml"
    outside.parent.mkdir()
    outside.write_text(GOOD)
    index = RecipeIndex(folder)
    assert index.resolve(str(folder / "plate-4h.yaml")) == folder / "plate-4h.yaml"
    with pytest.raises(RecipeLookupError) as e:
        index.resolve(str(outside))
    text = str(e.value)
    assert f"{outside} is not in the recipe folder {folder}" in text, text
    assert f"copy it into {folder}, then activate it by name" in text, text


def test_a_name_typo_has_its_own_result_and_the_plc_codes_stay() -> None:
    from controller.contract import RecipeResult

    assert [(m.name, m.value) for m in RecipeResult][:7] == [
        ("NONE", 0), ("ACTIVE", 1), ("INVALID", 2), ("UNKNOWN_NUMBER", 3), ("BUSY", 4),
        ("MODEL_FAILED", 5), ("NOT_SAFE", 6),
    ]  # fmt: skip
    assert RecipeResult.UNKNOWN_RECIPE.value == 7


# ---------------------------------------------------------------------------- 2: recipe list
def test_recipe_list_shows_the_first_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = folder_with(tmp_path, **{"plate-4h": GOOD, "bad": GOOD.replace("number: 1", "number: -4")})
    assert main(["recipe", "list", str(folder)]) == 1
    out = capsys.readouterr()
    row = next(ln for ln in out.out.splitlines() if "bad.yaml" in ln)
    assert "INVALID" in row and "number" in row and "-4" in row, row


def test_recipe_list_shows_the_recipe_name_and_the_file_where_they_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = folder_with(tmp_path, gain=GOOD.replace("name: plate-4h", "name: p-gain"))
    assert main(["recipe", "list", str(folder)]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.startswith("p-gain ") and row.rstrip().endswith("gain.yaml"), row


def test_recipe_list_of_an_empty_folder_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    line = one_line(["recipe", "list", str(folder)], capsys, code=1)
    assert line == f"cellctl recipe list: no recipes (*.yaml) in {folder}", line


def test_recipe_list_of_the_cells_folder_says_they_are_cell_configs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["recipe", "list", str(ROOT / "recipes/cells")]) == 1
    out = capsys.readouterr()
    assert "INVALID" not in out.out, out.out
    assert "cell config" in out.err and "demo-cell.yaml" in out.err, out.err


# ---------------------------------------------------------------------- 3: messages and codes
def test_unknown_option_names_the_subcommand_and_the_close_one(
    capsys: pytest.CaptureFixture[str], demo_calls: list[Any]
) -> None:
    line = one_line(["demo", "--partz", "3"], capsys)
    assert line.startswith("cellctl demo: unrecognized arguments: --partz 3"), line
    assert "did you mean --parts?" in line, line
    assert not demo_calls


def test_mistyped_top_level_option_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(["--versoin"], capsys)
    assert line.startswith("cellctl: unrecognized arguments: --versoin") and "did you mean --version?" in line


def test_mistyped_subcommand_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(["dmeo"], capsys)
    assert "invalid choice: 'dmeo'" in line and "did you mean 'demo'?" in line, line
    line = one_line(["recipe", "lsit"], capsys)
    assert line.startswith("cellctl recipe:") and "did you mean 'list'?" in line, line


@pytest.mark.parametrize("cameras", ["0", "9"])
@pytest.mark.parametrize("command", [["demo", "--headless", "--parts", "1"], ["sim"]])
def test_cameras_out_of_range_reads_the_same_either_way(
    capsys: pytest.CaptureFixture[str], demo_calls: list[Any], cameras: str, command: list[str]
) -> None:
    line = one_line([*command, "--cameras", cameras], capsys)
    assert line == (
        f"cellctl {command[0]}: --cameras: expected a whole number from 1 to 4 (the cameras of cell "
        f"demo-cell), found '{cameras}' (see cellctl {command[0]} --help)"
    ), line


@pytest.mark.parametrize(
    "args",
    [
        ["recipe", "validate", "--cell", str(ROOT / "recipes/cells/demo-cell.yaml"), "PLATE-4H"],
        ["recipe", "diff", "PLATE-4H", "plate-4h", "--recipes", str(ROOT / "recipes")],
        ["demo", "--headless", "--parts", "1", "--recipe", "PLATE-4H"],
    ],
)
def test_no_such_recipe_exits_2_with_a_case_blind_did_you_mean(
    capsys: pytest.CaptureFixture[str], demo_calls: list[Any], args: list[str]
) -> None:
    line = one_line(args, capsys, code=2)
    assert line.startswith(f"cellctl {args[0] if args[0] != 'recipe' else 'recipe ' + args[1]}: "), line
    assert "did you mean 'plate-4h'?" in line, line


def test_run_with_a_recipe_typo_exits_2(tmp_path: Path) -> None:
    from controller.daemon import RunOptions, run_service

    cell = ROOT / "recipes/cells/demo-cell.yaml"
    opts = RunOptions(cell, "plate4h", None, tmp_path / "data", tmp_path / "run" / "cell.sock")
    assert run_service(opts) == 2
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_diff_without_a_folder_says_it_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELL_RECIPES", raising=False)
    monkeypatch.delenv("CELL_CONFIG", raising=False)
    monkeypatch.setattr("controller.cli.INSTALLED_RECIPES", Path("/nonexistent/recipes"))
    monkeypatch.setattr("controller.cli.INSTALLED_CELL", Path("/nonexistent/cell.yaml"))
    line = one_line(["recipe", "diff", "plate-4h", "plate-4h"], capsys, code=2)
    assert line.startswith("cellctl recipe diff: no recipe folder"), line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: a\n\tnumber: 1\n", "a tab character"),
        ("roi: [a b: c: d]\n", "':' where ',' or ']' should be"),
    ],
)
def test_yaml_errors_read_as_plain_words(tmp_path: Path, text: str, says: str) -> None:
    from controller.config import ConfigError, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    line = str(e.value.problems[0])
    assert says in line and "found found" not in line and "but got" not in line, line


def test_status_on_a_file_that_is_not_a_socket_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    line = one_line(["status", "--socket", str(plain)], capsys, code=1)
    assert line == f"cellctl status: {plain} is not a socket (give --socket the service's control socket)"


def test_status_json_says_in_json_that_no_service_answers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["status", "--json", "--socket", str(tmp_path / "none.sock")]) == 1
    out = capsys.readouterr()
    reply = json.loads(out.out)
    assert reply["reachable"] is False and "no cell service" in reply["error"], reply


# ------------------------------------------------------------------ 4: options checked first
def test_a_data_dir_that_is_a_file_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], demo_calls: list[Any], tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    line = one_line(["demo", "--headless", "--parts", "1", "--data-dir", str(plain)], capsys)
    assert line == f"cellctl demo: --data-dir: {plain} is not a folder", line
    assert not demo_calls


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("camera7:freeze=2@3", "camera7: the demo runs cameras 0 to 2"),
        ("disk:full=3@-2", "SECONDS must be a number ≥ 0"),
        ("disk:full=3@9", "a small tmpfs"),
    ],
)
def test_faults_that_could_not_happen_are_refused(
    capsys: pytest.CaptureFixture[str],
    demo_calls: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    says: str,
) -> None:
    import os
    from types import SimpleNamespace

    # the default data folder's filesystem, as big as a usual /tmp, wherever the test runs
    monkeypatch.setattr(os, "statvfs", lambda _: SimpleNamespace(f_blocks=1 << 20, f_frsize=4096))
    line = one_line(["demo", "--headless", "--parts", "1", "--cameras", "3", "--fault", fault], capsys)
    assert line.startswith("cellctl demo: --fault") and says in line, line
    assert not demo_calls


# ------------------------------------------------------------------------------ 5: README
def test_readme_lists_every_packml_command() -> None:
    from controller.core.packml import Command

    readme = (ROOT / "README.md").read_text()
    names = [c.name.lower() for c in Command if c.name != "UNDEFINED"]
    line = next(ln for ln in readme.splitlines() if "cellctl command hold" in ln)
    assert all(n in line for n in names), (names, line)


def test_status_json_watch_writes_a_line_while_no_service_answers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    assert main(["status", "--json", "--watch", "1", "--socket", str(tmp_path / "none.sock")]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["reachable"] is False, line


# --------------------------------------------------------------------- 6: cellctl run's start
def test_run_refuses_a_socket_in_a_folder_whose_parent_is_missing(tmp_path: Path) -> None:
    from controller.daemon import StartupError, claim_socket_folder

    with pytest.raises(StartupError, match="does not exist"):
        claim_socket_folder(tmp_path / "nodir" / "x" / "c.sock")
    assert not (tmp_path / "nodir").exists()


def test_a_second_run_is_refused_before_any_model_loads_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import socket

    import controller.daemon as daemon

    def no_model(*_: Any) -> Any:
        raise AssertionError("the recipe and its model were loaded before the socket was checked")

    monkeypatch.setattr(daemon, "check_recipe", no_model)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o750)
    sock = run_dir / "cell.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:  # the service already running
        other.bind(str(sock))
        other.listen(1)
        cell = ROOT / "recipes/cells/demo-cell.yaml"
        opts = daemon.RunOptions(cell, "plate-4h", None, tmp_path / "data", sock)
        with caplog.at_level(logging.ERROR):
            assert daemon.run_service(opts) == 1
    assert f"another cell service answers on {sock}" in caplog.text, caplog.text
    assert not (tmp_path / "data").exists()


def test_claimed_socket_folder_is_removed_when_the_run_ends(tmp_path: Path) -> None:
    from controller.daemon import claim_socket_folder

    assert claim_socket_folder(tmp_path / "made" / "c.sock") is True
    assert (tmp_path / "made").is_dir()
    assert claim_socket_folder(tmp_path / "made" / "c.sock") is False  # there already: not ours to remove


def test_validating_a_recipe_does_not_log_the_model_load(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from controller.config import load_cell_config
    from controller.recipes import check_recipe

    cell = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    with caplog.at_level(logging.INFO):
        checked = check_recipe(ROOT / "recipes/plate-4h.yaml", cell, measure=False)
    assert checked.recipe is not None, checked.problems
    assert "CPUExecutionProvider" not in caplog.text, caplog.text  # the line's own load says it, once
