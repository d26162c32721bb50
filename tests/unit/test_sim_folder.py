"""`cellctl sim --dir` removes what it made there, and only that (issue 15, item 5)."""

from __future__ import annotations

from pathlib import Path

from controller.sim_line import line_folder


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
