"""Issue 15, item 8: logs people can read. `-v` anywhere on the command line, libraries' per-packet
and per-callback debug lines only when asked for (-vv), one format for `run` and `demo`, and
nothing written over a live console."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.logs import LIBRARIES, held_logs, setup_logging

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures the root logger as `cellctl` would; put it back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    libs = {name: logging.getLogger(name).level for name in LIBRARIES}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, lvl in libs.items():
        logging.getLogger(name).setLevel(lvl)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`demo` and `run` never really start: each records that it was called."""
    import controller.daemon as daemon
    import controller.demo as demo

    calls: list[str] = []

    def fake(name: str) -> Any:
        def run(opts: Any) -> int:
            calls.append(name)
            return 0

        return run

    monkeypatch.setattr(demo, "run_demo", fake("demo"))
    monkeypatch.setattr(daemon, "run_service", fake("run"))
    return calls


def alone() -> None:
    """The root logger as in a process of its own: without pytest's capture handlers."""
    logging.getLogger().handlers[:] = []


RUN = ["run", "--cell", str(ROOT / "recipes/cells/demo-cell.yaml"), "--recipe", "plate-4h"]


@pytest.mark.parametrize(
    "args",
    [["-v", "demo", "--headless", "--parts", "1"], ["demo", "--headless", "--parts", "1", "-v"]],
)
def test_verbose_works_before_and_after_the_subcommand(started: list[str], args: list[str]) -> None:
    assert main(args) == 0 and started == ["demo"]
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("controller.service").isEnabledFor(logging.DEBUG)


def test_verbose_after_nested_subcommands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r").mkdir()
    assert main(["recipe", "list", str(tmp_path / "r"), "-v"]) == 1  # parsed; an empty folder fails
    assert logging.getLogger().level == logging.DEBUG


def test_libraries_stay_quiet_at_v_and_speak_at_vv(started: list[str]) -> None:
    main(["demo", "--headless", "--parts", "1", "-v"])
    assert not logging.getLogger("snap7.connection").isEnabledFor(logging.DEBUG)  # per-packet hex
    assert logging.getLogger("snap7.client").isEnabledFor(logging.INFO)  # connects, PDU size
    assert not logging.getLogger("transitions.core").isEnabledFor(logging.INFO)  # per callback
    assert not logging.getLogger("pymodbus").isEnabledFor(logging.DEBUG)
    main(["demo", "--headless", "--parts", "1", "-vv"])
    for name in ("snap7.connection", "transitions.core", "pymodbus"):
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    main(["-v", "demo", "--headless", "--parts", "1", "-v"])  # counted wherever they stand
    assert logging.getLogger("transitions.core").isEnabledFor(logging.DEBUG)


def test_without_v_the_demo_warns_and_the_service_informs(started: list[str]) -> None:
    main(["demo", "--headless", "--parts", "1"])
    assert logging.getLogger().level == logging.WARNING
    main(RUN)
    assert started == ["demo", "run"]
    assert logging.getLogger().level == logging.INFO
    assert not logging.getLogger("transitions.core").isEnabledFor(logging.INFO)


def test_run_and_demo_write_one_format(
    started: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    alone()
    lines = {}
    for name, args in (("demo", ["demo", "--headless", "--parts", "1"]), ("run", RUN)):
        main(args)
        logging.getLogger("controller.service").warning("PLC link lost")
        out = capsys.readouterr()
        # The service logs on stdout (journald reads it); the demo keeps stdout for its result.
        lines[name] = (out.out if name == "run" else out.err).strip()
    for line in lines.values():
        assert line.endswith(" WARNING controller.service [MainThread] PLC link lost"), lines
    assert lines["demo"].split(" ", 2)[2] == lines["run"].split(" ", 2)[2]


def test_under_journald_the_service_lines_carry_priorities(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging(0, service=True)
    logging.getLogger("controller.service").warning("PLC link lost")
    assert capsys.readouterr().out == "<4>WARNING controller.service [MainThread] PLC link lost\n"


def test_records_wait_while_a_screen_is_live_and_come_after_it(capsys: pytest.CaptureFixture[str]) -> None:
    alone()
    setup_logging(0)
    log = logging.getLogger("controller.api")
    with held_logs(limit=3):
        for k in range(5):
            log.warning("record %d", k)
        assert capsys.readouterr().err == ""  # nothing drawn over the screen
    err = capsys.readouterr().err.splitlines()
    assert "2 log records from while the screen was up were dropped" in err[0], err
    assert [ln.rsplit(" ", 1)[1] for ln in err[1:]] == ["2", "3", "4"], err
    log.warning("after")
    assert capsys.readouterr().err.endswith("after\n")


def test_the_console_holds_log_records_until_its_screen_closes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import controller.terminal as terminal

    alone()
    setup_logging(0)
    during: list[str] = []

    def frame(self: Any, size: tuple[int, int]) -> Any:
        logging.getLogger("controller.api").warning("client flood")
        during.append(capsys.readouterr().err)
        raise KeyboardInterrupt  # Ctrl-C: the console ends

    monkeypatch.setattr(terminal.ConsoleSession, "frame", frame)
    assert terminal.attach(tmp_path / "cell.sock") == 0
    assert during == [""]
    assert capsys.readouterr().err.endswith("WARNING controller.api [MainThread] client flood\n")


def test_a_host_keeps_its_own_handlers_but_the_service_takes_its_process() -> None:
    mine = logging.NullHandler()
    logging.getLogger().handlers[:] = [mine]
    setup_logging(1)  # `cellctl status -v` inside a host (a test, a script calling main())
    assert logging.getLogger().handlers == [mine] and logging.getLogger().level == logging.DEBUG
    setup_logging(0, service=True)
    assert logging.getLogger().handlers != [mine]
