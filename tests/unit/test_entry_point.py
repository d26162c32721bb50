"""`cellctl`'s entry point: Ctrl-C while the program loads exits 130 with one line, whatever
module was loading (found by a new user: a pydantic class being built turned the exit into a
RuntimeError traceback, rc 1)."""

from __future__ import annotations

import signal

import pytest

import controller.__main__ as entry


def test_ctrl_c_while_a_class_is_being_built_exits_130_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def loading() -> None:
        try:
            entry._interrupted(signal.SIGINT, None)
        except SystemExit as exc:  # what Python does to an exception out of __set_name__
            raise RuntimeError("Error calling __set_name__ on 'PydanticDescriptorProxy'") from exc

    monkeypatch.setattr(entry, "_load_cli", loading)
    monkeypatch.setattr(entry, "_received", [])
    assert entry.main() == 130
    assert capsys.readouterr().err == "cellctl: stopped by SIGINT while starting\n"


def test_an_error_while_loading_without_a_signal_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("a module is missing")

    monkeypatch.setattr(entry, "_load_cli", broken)
    monkeypatch.setattr(entry, "_received", [])
    with pytest.raises(ImportError):
        entry.main()
