"""Issue 15, item 5: a client finds the service's control socket without an environment
variable, the installed (systemd) service's too."""

from __future__ import annotations

from pathlib import Path

import pytest

import controller.cli as cli


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(this user's default socket, the installed service's socket), neither there yet."""
    monkeypatch.delenv("CELLCTL_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    installed = tmp_path / "run" / "inspection-cell" / "cell.sock"
    monkeypatch.setattr(cli, "INSTALLED_SOCKET", installed)
    return tmp_path / "user" / "inspection-cell" / "cell.sock", installed


def test_the_installed_service_is_found_when_no_service_of_ours_runs(places: tuple[Path, Path]) -> None:
    own, installed = places
    assert cli.client_socket() == own  # nothing installed: this user's default (and its message)
    installed.parent.mkdir(parents=True)
    assert cli.client_socket() == installed
    for command in (["status"], ["console"], ["command", "reset"], ["recipe", "activate", "x"]):
        assert cli.build_parser().parse_args(command).socket == installed, command
    # A service of this user's own, running: its socket comes first.
    own.parent.mkdir(parents=True)
    own.touch()
    assert cli.client_socket() == own


def test_the_environment_and_the_option_come_first(
    places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, installed = places
    installed.parent.mkdir(parents=True)
    monkeypatch.setenv("CELLCTL_SOCKET", str(tmp_path / "mine.sock"))
    assert cli.client_socket() == tmp_path / "mine.sock"
    args = cli.build_parser().parse_args(["status", "--socket", str(tmp_path / "given.sock")])
    assert args.socket == tmp_path / "given.sock"
    # The service itself serves where it always did: the option, CELLCTL_SOCKET, else per user.
    run = cli.build_parser().parse_args(["run", "--cell", "c.yaml", "--recipe", "r"])
    assert run.socket == tmp_path / "mine.sock"
