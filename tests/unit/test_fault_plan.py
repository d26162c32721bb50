"""The fault-injection plan's language: one place, clear errors."""

from __future__ import annotations

import pytest

from simulators.faults import Fault, FaultPlan


def test_specs_parse_into_a_plan_in_time_order() -> None:
    plan = FaultPlan.parse(["plc:restart@10", "camera2:freeze=1.5@3", "disk:full=2@7", "client:idle=5@1"])
    assert [str(f) for f in plan.faults] == [
        "client:idle=5@1",
        "camera2:freeze=1.5@3",
        "disk:full=2@7",
        "plc:restart=0@10",
    ]
    assert plan.faults[1] == Fault("camera", "freeze", 3.0, 1.5, 2)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("plc:reboot@1", "expected TARGET"),
        ("robot:restart@1", "expected TARGET"),
        ("plc:restart", "expected TARGET"),
        ("camera0:delay=fast@2", "must be numbers"),
    ],
)
def test_a_bad_spec_says_what_is_expected(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Fault.parse(spec)


def test_the_demo_refuses_a_bad_fault_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--fault", "plc:reboot@1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected TARGET[INDEX]:KIND[=VALUE]@SECONDS" in err and "Traceback" not in err
