"""Issue 15: the demo's choices made before it runs: no terminal without --parts is refused
as --headless is; a second demo's broker refuses a port taken already; the time the cell did
not inspect and the parts rejected then are counted apart."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from controller import demo
from controller.demo import (
    KEY_STOP,
    DemoInterrupted,
    DemoOptions,
    NotInspecting,
    StopSignals,
    not_inspecting_rejects,
    run_demo,
    summary,
)
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


def test_an_open_spell_counts_until_the_end_and_starting_up_is_none() -> None:
    clock = NotInspecting()
    clock.observe(False, -1.0)  # starting, not yet inspecting
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
    records = {  # by (PLC epoch, part id)
        (0, 1): {"verdict": "NO_DECISION", "reason": "not_inspecting"},
        (0, 2): {"verdict": "FAIL", "reason": "defect"},
        (0, 3): {"verdict": "NO_DECISION", "reason": "not_inspecting"},
        (0, 4): {"verdict": "PASS", "reason": "none"},
        (1, 2): {"verdict": "NO_DECISION", "reason": "not_inspecting"},  # another epoch's part 2
    }
    assert not_inspecting_rejects(outcomes, records) == {
        "rejected_not_inspecting": 2,
        "false_rejects_inspected": 1,
    }


def test_a_stop_cut_short_exits_128_plus_its_signal_but_q_as_the_score_says() -> None:
    def stops(*signums: int) -> StopSignals:
        s = StopSignals(keys=True)
        for sig in signums:
            s._record(sig)
        return s

    assert stops(KEY_STOP, KEY_STOP).exit_code(1) == 1 and stops(KEY_STOP).exit_code(0) == 0
    assert stops(signal.SIGINT, signal.SIGINT).exit_code(0) == 130
    assert stops(KEY_STOP, signal.SIGTERM).exit_code(0) == 128 + signal.SIGTERM
    assert stops().exit_code(1) == 1
    assert str(DemoInterrupted(KEY_STOP)) == "stopped by q before the line ran"


def test_the_summary_says_when_the_cell_did_not_inspect_and_the_belt_was_not_run_empty() -> None:
    result = {
        "parts": 10, "passed": 4, "rejected": 6, "escapes": 0, "false_rejects": 5, "misrouted": 0, "lost": 0,
        "latency_ms": {"p50": 3.0, "p99": 9.0}, "not_inspecting": {"spells": 1, "seconds": 95.21},
        "rejected_not_inspecting": 5, "false_rejects_inspected": 0, "belt_run_empty": False,
    }  # fmt: skip
    assert summary(result).endswith(
        "; the cell did not inspect once, 95.2 s in all (held, stopped or aborted): 5 parts rejected then, "
        "0 false rejects among the parts it inspected; the belt was not run empty"
    )
    result.update(not_inspecting={"spells": 0, "seconds": 0.0}, belt_run_empty=True)
    assert summary(result).endswith("latency p50 3.0 ms p99 9.0 ms")
