from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import ConfigError, content_hash, load_cell_config, load_recipe

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_cell_and_recipe_load() -> None:
    cell = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    recipe = load_recipe(ROOT / "recipes/plate-4h.yaml")
    assert [c.name for c in cell.cameras][:3] == list(recipe.cameras)
    assert load_recipe(ROOT / "recipes/plate-4h-long.yaml").cameras["top"].trigger_offset_mm == 20
    assert len(content_hash(recipe)) == 64


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BASE = """\
schema_version: 1
name: x
number: 3
cameras:
  top: {}
model:
  path: m.onnx
  input_size: [64, 64]
  class_names: [scratch]
"""


def test_unknown_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "thresholdz: {scratch: 0.5}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(p)
    (prob,) = e.value.problems
    assert prob.line == 10 and prob.field == "thresholdz"
    assert "did you mean 'thresholds'" in prob.expected


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "name: y\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_recipe(p)


def test_alias_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, BASE.replace("  top: {}", "  top: &c {}\n  left: *c"))
    with pytest.raises(ConfigError, match="aliases are not allowed"):
        load_recipe(p)


def test_out_of_range_and_missing(tmp_path: Path) -> None:
    p = write(tmp_path, BASE.replace("  path: m.onnx\n", "") + "default_threshold: 7\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(p)
    fields = {pr.field: pr for pr in e.value.problems}
    assert fields["model.path"].found == "nothing"
    assert fields["default_threshold"].expected == "at most 1"


def test_threshold_for_unknown_class(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "thresholds: {dent: 0.5}\n")
    with pytest.raises(ConfigError, match=r"thresholds\.dent: expected a class of the model"):
        load_recipe(p)


def test_cell_stations_must_be_ordered(tmp_path: Path) -> None:
    text = (ROOT / "recipes/cells/demo-cell.yaml").read_text().replace("reject_mm: 500", "reject_mm: 420")
    with pytest.raises(ConfigError, match="stations: expected stations in order"):
        load_cell_config(write(tmp_path, text))


def test_modbus_ring_must_fit_one_read(tmp_path: Path) -> None:
    text = (ROOT / "recipes/cells/demo-cell-modbus.yaml").read_text()
    assert load_cell_config(ROOT / "recipes/cells/demo-cell-modbus.yaml").plc.protocol == "modbus"
    with pytest.raises(ConfigError, match="at most 8 for Modbus"):
        load_cell_config(write(tmp_path, text.replace("ring_size: 8", "ring_size: 16")))


def test_pylon_cameras_need_a_serial_and_one_image_size(tmp_path: Path) -> None:
    text = (ROOT / "recipes/cells/demo-cell.yaml").read_text()
    p = tmp_path / "cell.yaml"
    p.write_text(
        text.replace(
            '{name: top,   driver: socket, serial: "SIM-0"', '{name: top,   driver: pylon, serial: ""'
        )
    )
    with pytest.raises(ConfigError, match="serial: expected a serial number for pylon camera top"):
        load_cell_config(p)
    p.write_text(text.replace('serial: "SIM-1",', 'serial: "SIM-1", width: 128,'))
    with pytest.raises(ConfigError, match="one image size"):
        load_cell_config(p)


def _cell_with(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "cell.yaml"
    p.write_text((ROOT / "recipes/cells/demo-cell.yaml").read_text() + extra)
    return p


def test_plant_connections_are_off_by_default() -> None:
    cell = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    assert not cell.mqtt.enabled and not cell.opcua.enabled


def test_plant_config_errors_say_file_line_field_expected_found(tmp_path: Path) -> None:
    p = _cell_with(
        tmp_path,
        "mqtt:\n  enabled: true\n  site: s1\n  password: hunter2\n  prefix: 'a//b'\n"
        "opcua:\n  enabled: true\n  endpoint: opc.tcp://0.0.0.0:4840/x\n  security: none\n"
        "  anonymous: true\n",
    )
    with pytest.raises(ConfigError) as e:
        load_cell_config(p)
    text = [str(prob) for prob in e.value.problems]
    assert not any("Value error" in t or "value_error" in t for t in text), text
    lines = p.read_text().splitlines()
    by_field = {prob.field: prob for prob in e.value.problems}
    pw = by_field["mqtt.password"]
    assert lines[pw.line - 1].strip().startswith("password:")
    assert "password_file or password_env" in pw.expected and pw.found == "'hunter2'"
    assert "topic levels" in by_field["mqtt.prefix"].expected and by_field["mqtt.prefix"].found == "'a//b'"
    assert by_field["mqtt.area"].found == "nothing" and "enabled" in by_field["mqtt.area"].expected
    assert "mqtt.line" in by_field
    sec = by_field["opcua.security"]
    assert lines[sec.line - 1].strip().startswith("security:")
    assert "basic256sha256" in sec.expected and "0.0.0.0" in sec.expected and sec.found == "none"
    for t in text:
        assert t.startswith(f"{p}:") and ": expected " in t and ", found " in t, t
