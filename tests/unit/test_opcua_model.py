"""The OPC UA server's config and its plain model: security rules, passwords, state mapping,
result fields, the result ring and the variables kept from events and snapshots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.contract import AlarmCode, RecipeResult, State, Verdict
from controller.core.packml import StateChanged
from controller.core.types import ReasonCode, ViewStatus
from controller.events import (
    AlarmCleared,
    AlarmRaised,
    LinkDown,
    PartRecorded,
    RecipeActivated,
    ViewOutcome,
    to_dict,
)
from controller.plant.opcua_config import OpcUaConfig, OpcUaUser, SecretError, is_local_host, read_password
from controller.plant.opcua_model import (
    RESULT_FIELDS,
    VARIABLES,
    VISION_STATES,
    CellView,
    ResultRing,
    result_fields,
    vision_state,
)
from controller.snapshot import StatusSnapshot

VIEWER = {"name": "vic", "role": "viewer", "password_env": "VIC_PW"}


def part(part_id: int = 7, verdict: Verdict = Verdict.FAIL) -> PartRecorded:
    views = (
        ViewOutcome(
            "top", ViewStatus.OK, ReasonCode.DEFECT, (0.1, 0.93), ("scratch",), (("scratch", 1, 2, 3, 4),)
        ),
        ViewOutcome("side", None, ReasonCode.MISSING_FRAME, (), (), ()),
    )
    return PartRecorded(
        part_id, "run-3", 3, verdict, ReasonCode.DEFECT, ("top: scratch",), True, views, 12.5, "bottle",
        4, "abc123", "model9", True, (), time=1_700_000_000.25,
    )  # fmt: skip


def snapshot(**over: object) -> StatusSnapshot:
    base: dict[str, object] = dict(
        state="EXECUTE", recipe="bottle", recipe_hash="abc123abc123", provider="cpu", parts=10, passed=7,
        failed=2, no_decision=1, in_flight=3, parts_per_min=1500.0, latency_p50_ms=4.0, latency_p99_ms=9.0,
        rejects_by_reason={}, cameras={}, link_up=True, heartbeat_age_s=0.01, alarms={}, recent=[],
        ready=True, line_speed_mm_s=800.0,
    )  # fmt: skip
    base.update(over)
    return StatusSnapshot(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------ config
def test_config_is_off_by_default_and_secure_by_default() -> None:
    cfg = OpcUaConfig()
    assert cfg.enabled is False
    assert cfg.security == "basic256sha256"
    assert cfg.host == "127.0.0.1" and cfg.port == 4840


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "cell.plant.example", "[::]"])
def test_security_none_refused_off_loopback(host: str) -> None:
    with pytest.raises(ValidationError, match="none is allowed only on a loopback endpoint"):
        OpcUaConfig(endpoint=f"opc.tcp://{host}:4840/", security="none")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"])
def test_security_none_allowed_on_loopback(host: str) -> None:
    assert OpcUaConfig(endpoint=f"opc.tcp://{host}:4840/", security="none").security == "none"


def test_basic256sha256_allowed_anywhere() -> None:
    assert OpcUaConfig(endpoint="opc.tcp://0.0.0.0:4840/").host == "0.0.0.0"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4840/", "opc.tcp://127.0.0.1/", "opc.tcp://:4840/",
                                      "opc.tcp://127.0.0.1:99999/"])  # fmt: skip
def test_endpoint_must_be_opc_tcp_with_a_port(endpoint: str) -> None:
    with pytest.raises(ValidationError, match=r"expected opc\.tcp://host:port/path"):
        OpcUaConfig(endpoint=endpoint)


def test_inline_password_refused() -> None:
    with pytest.raises(ValidationError, match="never kept in the cell config"):
        OpcUaUser(name="op", role="operator", password="secret", password_env="OP_PW")


def test_user_needs_exactly_one_password_source() -> None:
    with pytest.raises(ValidationError, match="password_file or password_env"):
        OpcUaUser(name="op", role="operator")
    with pytest.raises(ValidationError, match="password_file or password_env"):
        OpcUaUser(name="op", role="operator", password_env="A", password_file="b")


def test_unknown_keys_roles_and_duplicate_users_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        OpcUaConfig(port=4840)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        OpcUaUser(name="root", role="admin", password_env="X")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"users\.1\.name: expected a name no other user has"):
        OpcUaConfig(users=[VIEWER, VIEWER])  # type: ignore[list-item]


def test_enabled_needs_someone_to_log_in() -> None:
    with pytest.raises(ValidationError, match="no one could log in"):
        OpcUaConfig(enabled=True)
    assert OpcUaConfig(enabled=True, anonymous=True).anonymous


def test_is_local_host() -> None:
    assert is_local_host("LOCALHOST") and is_local_host("::1") and is_local_host("127.9.9.9")
    assert not is_local_host("0.0.0.0") and not is_local_host("10.0.0.1") and not is_local_host("plc")


def test_password_from_env_and_file(tmp_path: Path) -> None:
    user = OpcUaUser(name="vic", role="viewer", password_env="VIC_PW")
    assert read_password(user, tmp_path, {"VIC_PW": "s3cret"}) == "s3cret"
    with pytest.raises(SecretError, match="VIC_PW is not set"):
        read_password(user, tmp_path, {})
    (tmp_path / "pw").write_text("  hunter2 \nsecond line\n")
    from_file = OpcUaUser(name="eng", role="engineer", password_file="pw")
    assert read_password(from_file, tmp_path, {}) == "hunter2"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        read_password(OpcUaUser(name="e", role="engineer", password_file="empty"), tmp_path, {})
    with pytest.raises(SecretError, match="cannot read"):
        read_password(OpcUaUser(name="e", role="engineer", password_file="missing"), tmp_path, {})


# ------------------------------------------------------------------- model
def test_every_packml_state_has_a_vision_state() -> None:
    assert set(VISION_STATES) == set(State)
    assert vision_state("EXECUTE") == ("Operational", "ContinuousExecution")
    assert vision_state("idle") == ("Operational", "Ready")
    assert vision_state("ABORTED") == ("Error", "")
    assert vision_state("STOPPED") == ("Halted", "")
    assert vision_state("nonsense") == ("Preoperational", "")


def test_result_fields_follow_the_part() -> None:
    ev = part()
    fields = result_fields(ev, simulated=True)
    assert [name for name, _, _ in RESULT_FIELDS] == list(fields)
    assert fields["ResultId"] == "run-3:7" and fields["PartId"] == "7" and fields["RunId"] == "run-3"
    assert fields["RecipeId"] == "bottle" and fields["RecipeNumber"] == 4 and fields["IsSimulated"] is True
    assert fields["Verdict"] == "fail" and fields["VerdictCode"] == 2
    assert fields["Reasons"] == ["top: scratch"] and fields["Cameras"] == ["top", "side"]
    assert fields["CameraScores"][0] == 0.93 and math.isnan(fields["CameraScores"][1])
    content = json.loads(fields["ResultContent"])
    assert content["result_id"] == "run-3:7" and content["is_simulated"] is True
    assert {k: v for k, v in content.items() if k not in ("result_id", "is_simulated")} == to_dict(ev)


def test_result_ring_keeps_the_newest() -> None:
    ring = ResultRing(2)
    for i in range(3):
        ring.add(f"r:{i}", str(i))
    assert ring.get("r:0") is None and ring.get("r:1") == "1" and ring.get("r:2") == "2" and len(ring) == 2
    with pytest.raises(ValueError):
        ResultRing(0)


def test_view_from_snapshot_then_events() -> None:
    view = CellView()
    assert set(view.values()) == {v.name for v in VARIABLES}
    view.apply_snapshot(snapshot(alarms={13: "PLC link lost"}))
    v = view.values()
    assert v["StateCurrent"] == 6 and v["StateCurrentName"] == "EXECUTE"
    assert (v["CurrentState"], v["OperationalSubstate"]) == ("Operational", "ContinuousExecution")
    assert v["ProdProcessedCount"] == 10 and v["ProdDefectiveCount"] == 3 and v["ProdPassedCount"] == 7
    assert v["CurMachSpeed"] == 1500.0 and v["AlarmIds"] == [13] and v["AlarmMessages"] == ["PLC link lost"]
    view.apply_event(StateChanged(State.EXECUTE, State.HELD, "hold", "alarm PLC_LINK_LOST"))
    view.apply_event(AlarmRaised(int(AlarmCode.CAMERA_LOST), "CAMERA_LOST", "camera top lost"))
    view.apply_event(AlarmCleared(13, "PLC_LINK_LOST", "PLC link lost", 2))
    view.apply_event(RecipeActivated("cli", "can", "f" * 64, RecipeResult.ACTIVE, "from part 11"))
    view.apply_event(LinkDown("timeout"))
    view.apply_event(part(8))
    v = view.values()
    assert v["StateCurrentName"] == "HELD" and v["CurrentState"] == "Operational"
    assert v["AlarmIds"] == [30] and v["AlarmCount"] == 1
    assert v["RecipeName"] == "can" and v["RecipeHash"] == "f" * 12
    assert v["LinkUp"] is False and v["LastResultId"] == "run-3:8"


def test_values_never_carry_nan() -> None:
    view = CellView()
    view.apply_snapshot(snapshot(latency_p99_ms=float("nan"), parts_per_min=float("inf")))
    assert view.values()["LatencyP99Ms"] == 0.0 and view.values()["CurMachSpeed"] == 0.0


def test_trusted_clients_need_an_encrypted_endpoint() -> None:
    with pytest.raises(ValidationError, match="trusted_clients: expected no trusted_clients with security"):
        OpcUaConfig(security="none", trusted_clients="pki/trusted")
    assert OpcUaConfig(trusted_clients="pki/trusted").trusted_clients == "pki/trusted"


def test_the_result_event_and_the_status_show_a_recipe_hash_alike() -> None:
    from dataclasses import replace

    full = "0123456789abcdef" * 4
    fields = result_fields(replace(part(), recipe_hash=full), simulated=False)
    view = CellView()
    view.apply_snapshot(snapshot(recipe_hash=full[:12]))
    assert fields["RecipeHash"] == view.values()["RecipeHash"] == full[:12]
    assert json.loads(fields["ResultContent"])["recipe_hash"] == full  # the whole hash stays in the content
    docs = {v.name: v.doc for v in VARIABLES} | {n: d for n, _, d in RESULT_FIELDS}
    assert "12 hex digits" in docs["RecipeHash"]


def test_processed_counts_judged_parts_not_those_in_flight() -> None:
    view = CellView()
    view.apply_snapshot(snapshot(parts=13, passed=7, failed=2, no_decision=1, in_flight=3))
    v = view.values()
    assert v["ProdProcessedCount"] == 10 == v["ProdPassedCount"] + v["ProdDefectiveCount"]
    speed = next(x for x in VARIABLES if x.name == "CurMachSpeed")
    assert "10 s" in speed.doc and "minute" not in speed.doc.replace("per minute", "")
