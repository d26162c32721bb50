"""Issue 15: the demo's choices made before it runs: no terminal without --parts is refused
as --headless is; a second demo's broker refuses a port taken already; the time the cell did
not inspect and the parts rejected then are counted apart."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from controller import demo
from controller.demo import DemoOptions, NotInspecting, not_inspecting_rejects, run_demo
from controller.plant.links import PlantStartError
from controller.plant.local_broker import broker_problem, start_local_broker
from simulators.line import Outcome


def test_without_a_terminal_and_without_parts_the_demo_is_refused_as_headless_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the demo ran")

    monkeypatch.setattr(demo, "_demo", never)
    assert run_demo(DemoOptions()) == 2  # pytest's stdout is no terminal
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "cellctl demo: no terminal: it runs headless, and --headless needs --parts N (it must end by itself)"
    ]


@pytest.mark.skipif(broker_problem() is not None, reason="no MQTT broker installed")
def test_a_broker_port_taken_already_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PlantStartError) as exc:
            start_local_broker(tmp_path, port)
    assert str(exc.value) == f"mqtt: cannot listen on 127.0.0.1:{port}: address already in use"


def test_spells_and_seconds_the_cell_did_not_inspect() -> None:
    clock = NotInspecting()
    for t, inspecting in [(0.0, True), (1.0, False), (1.5, False), (3.0, True), (4.0, False), (4.5, True)]:
        clock.observe(inspecting, t)
    clock.observe(True, 5.0)
    assert clock.figures() == {"spells": 2, "seconds": 2.5}


def test_an_open_spell_counts_until_the_end() -> None:
    clock = NotInspecting()
    clock.observe(True, 0.0)
    clock.observe(False, 2.0)
    clock.observe(False, 3.25)
    assert clock.figures() == {"spells": 1, "seconds": 1.25}


def _outcome(part: int, defective: bool, kicked: bool) -> Outcome:
    return Outcome(part, defective, (), kicked, kicked, cause=0, verdict=0)


def test_good_parts_rejected_while_not_inspecting_are_counted_apart_from_false_rejects() -> None:
    outcomes = [
        _outcome(1, False, True),
        _outcome(2, False, True),
        _outcome(3, True, True),
        _outcome(4, False, False),
    ]
    records = {
        1: {"verdict": "NO_DECISION", "reason": "not_inspecting"},
        2: {"verdict": "FAIL", "reason": "defect"},
        3: {"verdict": "NO_DECISION", "reason": "not_inspecting"},
        4: {"verdict": "PASS", "reason": "none"},
    }
    assert not_inspecting_rejects(outcomes, records) == {
        "rejected_not_inspecting": 2,
        "false_rejects_inspected": 1,
    }
