"""`cellctl sim --dir` removes what it made there, and only that (issue 15, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.sim_line import SIM_HEADER, SimFolderError, line_folder, run_sim


def _writes_like_the_line(where: Path) -> None:
    (where / "cams").mkdir(exist_ok=True)
    (where / "cams" / "cam0.sock").write_text("")
    (where / "cell.yaml").write_text("name: x\n")


def test_a_folder_it_made_is_gone_with_the_folders_above_it_made(tmp_path: Path) -> None:
    with line_folder(tmp_path / "a" / "b" / "line") as where:
        assert where == tmp_path / "a" / "b" / "line" and where.is_dir()
        _writes_like_the_line(where)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_was_there_stays_with_what_it_held(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    (tmp_path / "empty").mkdir()
    for given in (tmp_path, tmp_path / "empty"):
        with line_folder(given) as where:
            _writes_like_the_line(where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine.txt"]
    assert list((tmp_path / "empty").iterdir()) == []


def test_what_someone_else_put_in_its_folder_meanwhile_is_kept(tmp_path: Path) -> None:
    with line_folder(tmp_path / "line") as where:
        _writes_like_the_line(where)
        (where / "notes.txt").write_text("mine")
    assert [p.name for p in (tmp_path / "line").iterdir()] == ["notes.txt"]


def test_a_cams_folder_that_was_there_keeps_what_is_not_the_lines(tmp_path: Path) -> None:
    (tmp_path / "cams").mkdir()
    (tmp_path / "cams" / "readme").write_text("mine")
    with line_folder(tmp_path) as where:
        _writes_like_the_line(where)
    assert [p.name for p in (tmp_path / "cams").iterdir()] == ["readme"]
    assert not (tmp_path / "cell.yaml").exists()


def test_without_a_folder_a_temporary_one_is_made_and_removed() -> None:
    with line_folder(None) as where:
        assert where.is_dir()
        _writes_like_the_line(where)
    assert not where.exists()


def test_a_cell_config_of_someone_elses_there_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "cell.yaml").write_text("name: my-cell\n")
    with (
        pytest.raises(SimFolderError, match=r"cell\.yaml .*not written by cellctl sim"),
        line_folder(tmp_path),
    ):
        pass
    assert (tmp_path / "cell.yaml").read_text() == "name: my-cell\n"


def test_a_cell_config_a_sim_left_behind_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "cell.yaml").write_text(f"{SIM_HEADER} cell x attached to its simulated line.\nname: x\n")
    with line_folder(tmp_path) as where:
        _writes_like_the_line(where)
    assert not (tmp_path / "cell.yaml").exists()


def test_run_sim_refuses_such_a_folder_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cell.yaml").write_text("name: my-cell\n")
    assert run_sim(Path("recipes/cells/demo-cell.yaml"), Path("recipes/plate-4h.yaml"), tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cellctl sim: ") and "\n" not in err and "give --dir" in err


def test_a_folder_a_running_simulator_uses_is_refused_and_left_to_it(tmp_path: Path) -> None:
    # Review: a second `cellctl sim --dir` took over the first one's cell.yaml and, failing to
    # bind its sockets, removed the first line's config and sockets on its way out.
    with line_folder(tmp_path) as where:
        _writes_like_the_line(where)
        (where / "cell.yaml").write_text(f"{SIM_HEADER} cell x attached to its simulated line.\n")
        with pytest.raises(SimFolderError, match="another cellctl sim"), line_folder(tmp_path):
            pass
        assert (where / "cell.yaml").exists() and (where / "cams" / "cam0.sock").exists()
    assert list(tmp_path.iterdir()) == []  # the first one's exit still cleans up, lock included
