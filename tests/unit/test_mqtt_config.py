"""The MQTT section of the cell config: validated at load, secrets only from a file or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.plant import MqttConfig, SecretError

ON = {"enabled": True, "site": "plant1", "area": "pack", "line": "line2", "cell": "cell3"}


def problems(**fields: object) -> str:
    with pytest.raises(ValidationError) as err:
        MqttConfig.model_validate(fields)
    return str(err.value)


def test_off_by_default_and_needs_nothing_then() -> None:
    c = MqttConfig()
    assert not c.enabled and c.qos == 1 and c.tls is None and c.spool.sync == "full"


def test_enabled_needs_the_topic_levels() -> None:
    assert "site: expected a topic level (required when mqtt is enabled)" in problems(enabled=True)
    assert "area: expected a topic level" in problems(enabled=True)
    assert "line: expected a topic level" in problems(enabled=True)
    c = MqttConfig.model_validate(ON)
    assert c.levels() == ("plant1", "pack", "line2", "cell3")
    assert c.resolved_client_id() == "cell-plant1-pack-line2-cell3"


def test_the_cell_level_falls_back_to_the_cells_name_and_must_be_a_level() -> None:
    c = MqttConfig.model_validate({**ON, "cell": ""})
    assert c.levels("cellA")[3] == "cellA"
    with pytest.raises(ValueError, match="not a topic level"):
        c.levels("cell A/+")


@pytest.mark.parametrize("bad", ["a/b", "#", "+", "", "x y"])
def test_topic_levels_refuse_wildcards_and_separators(bad: str) -> None:
    if bad:
        assert "one topic level" in problems(**{**ON, "site": bad})
    prefix = {"a/b": "a//b", "": "/a"}.get(bad, bad)
    assert "topic levels" in problems(**{**ON, "prefix": prefix})


def test_qos_zero_is_not_offered_and_unknown_keys_are_errors() -> None:
    assert "qos" in problems(qos=0)
    assert "extra" in problems(hots="x").lower()


def test_an_inline_password_is_refused_with_the_way_out() -> None:
    text = problems(username="u", password="secret")
    assert "password_file or password_env" in text


def test_password_from_the_environment(tmp_path: Path) -> None:
    c = MqttConfig(username="u", password_env="CELL_MQTT_PW")
    assert c.resolve_password({"CELL_MQTT_PW": "s3cret"}) == "s3cret"
    with pytest.raises(SecretError, match="CELL_MQTT_PW is not set"):
        c.resolve_password({})


def test_password_from_a_file_relative_to_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    c = MqttConfig(username="u", password_file="pw")
    assert c.resolve_password(base=tmp_path) == "s3cret"
    with pytest.raises(SecretError, match=r"password_file .*missing"):
        MqttConfig(username="u", password_file=str(tmp_path / "missing")).resolve_password()
    (tmp_path / "empty").write_text("")
    with pytest.raises(SecretError, match="is empty"):
        MqttConfig(username="u", password_file="empty").resolve_password(base=tmp_path)


def test_secret_rules() -> None:
    assert "not both" in problems(username="u", password_file="a", password_env="B")
    assert "username: expected a username (a password needs one)" in problems(password_env="B")
    assert MqttConfig().resolve_password() is None


def test_tls_certificate_and_key_go_together() -> None:
    assert "key_file: expected cert_file and key_file together" in problems(tls={"cert_file": "c.pem"})
    c = MqttConfig.model_validate({"tls": {"ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem"}})
    assert c.tls is not None and c.tls.ca_file == "ca.pem"


def test_limits_are_checked_where_declared() -> None:
    expected = "reconnect_max_s: expected at least reconnect_min_s (5), found 1"
    assert expected in problems(reconnect_min_s=5, reconnect_max_s=1)
    assert "port" in problems(port=0)
    assert "max_mb" in problems(spool={"max_mb": 0})
