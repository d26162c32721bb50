"""The MQTT publisher without a broker: clear errors at construction, never a raise on an event."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.events import LinkUp
from controller.plant import MqttConfig, MqttFigures, MqttPublisher, SecretError

ON = {"enabled": True, "site": "s", "area": "a", "line": "l"}


def test_a_missing_secret_stops_it_at_construction_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_MQTT_PW", raising=False)
    cfg = MqttConfig.model_validate({**ON, "username": "u", "password_env": "NO_SUCH_MQTT_PW"})
    with pytest.raises(SecretError, match=r"^mqtt: password_env NO_SUCH_MQTT_PW is not set"):
        MqttPublisher(cfg, tmp_path / "s.sqlite", cell_name="c")


def test_the_cell_level_comes_from_the_cells_name_and_names_the_client(tmp_path: Path) -> None:
    pub = MqttPublisher(MqttConfig.model_validate(ON), tmp_path / "s.sqlite", cell_name="c7")
    assert pub.topics.of("part") == "inspection/v1/s/a/l/c7/part" and pub.client_id == "cell-s-a-l-c7"


def test_an_event_before_start_or_after_close_is_counted_not_raised(tmp_path: Path) -> None:
    pub = MqttPublisher(MqttConfig.model_validate(ON), tmp_path / "s.sqlite", cell_name="c")
    pub.on_event(LinkUp("connected", time=1.0))
    f = pub.figures()
    assert (f.failed, f.queued, f.connected, f.stream) == (1, 0, False, "")
    pub.close()
    pub.on_event(LinkUp("connected", time=1.0))
    assert pub.figures().failed == 2


def test_figures_of_a_cell_with_mqtt_off() -> None:
    f = MqttFigures.off().to_dict()
    assert f["enabled"] is False and f["connected"] is False and f["queued"] == 0 and f["last_error"] == ""


def test_the_status_is_pushed_from_the_cells_loop_never_read_from_the_publishers_thread(
    tmp_path: Path,
) -> None:
    import inspect
    import json

    # No callable the connection thread could use to read the service's state.
    assert "status" not in inspect.signature(MqttPublisher).parameters
    pub = MqttPublisher(MqttConfig.model_validate(ON), tmp_path / "s.sqlite", cell_name="c")
    assert json.loads(pub.status_message().payload)["data"]["cell"] is None  # none pushed yet
    snap = {"parts": 3, "latency_p99_ms": 4.2, "cameras": {"top": {"frames": 9}}}
    pub.set_status(snap)
    snap["parts"] = 99  # the caller's dict changing later changes nothing sent
    snap["cameras"]["top"]["frames"] = 0
    data = json.loads(pub.status_message().payload)["data"]
    assert data["cell"] == {"parts": 3, "latency_p99_ms": 4.2, "cameras": {"top": {"frames": 9}}}
    assert data["mqtt"]["enabled"] is True
