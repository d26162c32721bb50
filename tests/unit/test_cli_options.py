"""Issue 15, items 7 and 10: options are checked, help shows defaults, and the recipe commands
exit as their Unix namesakes do."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.logs import LIBRARIES

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "recipes/plate-4h.yaml").read_text()


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command line prints; it must exit 2 and start nothing."""
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    assert e.value.code == 2, (args, out)
    lines = (out.out + out.err).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--parts", "-5"], "--parts: expected a whole number ≥ 0, found '-5'"),
        (["--parts", "many"], "--parts: expected a whole number ≥ 0, found 'many'"),
        (["--drop-frames", "1.5"], "--drop-frames: expected a share from 0 to 0.5, found '1.5'"),
        (["--drop-verdict-writes", "-0.1"], "--drop-verdict-writes: expected a share from 0 to 0.5"),
        (["--extra-triggers", "nan"], "--extra-triggers: expected a share from 0 to 0.5"),
        (["--ppm", "0"], "--ppm: expected parts per minute over 0, up to 20000, found '0'"),
        (["--belt-speed", "-1"], "--belt-speed: expected"),
        (
            ["--cameras", "0"],
            "--cameras: expected a whole number from 1 to 4 (the cameras of cell demo-cell), found '0'",
        ),
        (["--spacing-jitter", "0.7"], "--spacing-jitter: expected"),
        (["--plc-scan-ms", "0"], "--plc-scan-ms: expected"),
        (["--mqtt", "70000"], "--mqtt: expected a port from 1 to 65535, found '70000'"),
        (["--opcua", "port"], "--opcua: expected a port from 1 to 65535, found 'port'"),
    ],
)
def test_bad_demo_options_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], demo_calls: list[Any], args: list[str], says: str
) -> None:
    line = refused(["demo", "--headless", *args], capsys)
    assert says in line, line
    assert line.startswith("cellctl demo: "), line
    assert not demo_calls


@pytest.mark.parametrize("option", ["--drop-frames", "--extra-triggers"])
def test_options_that_do_not_apply_to_pylon_emulation_are_refused(
    capsys: pytest.CaptureFixture[str], demo_calls: list[Any], option: str
) -> None:
    line = refused(["demo", "--cameras-from", "pylon-emulation", option, "0.1"], capsys)
    assert option in line and "pylon-emulation" in line, line
    assert not demo_calls


def test_good_options_still_run(demo_calls: list[Any]) -> None:
    assert main(["demo", "--headless", "--parts", "5", "--drop-frames", "0.5", "--ppm", "600"]) == 0
    (opts,) = demo_calls
    assert opts.parts == 5 and opts.drop_frames == 0.5 and opts.parts_per_min == 600


def test_mqtt_and_opcua_take_an_optional_port(demo_calls: list[Any]) -> None:
    assert main(["demo", "--headless", "--parts", "5"]) == 0
    assert main(["demo", "--headless", "--parts", "5", "--mqtt", "--opcua"]) == 0
    assert main(["demo", "--headless", "--parts", "5", "--mqtt", "1884", "--opcua", "4841"]) == 0
    assert [(o.mqtt, o.opcua) for o in demo_calls] == [(None, None), (0, 0), (1884, 4841)]


def test_mqtt_is_refused_in_one_line_where_no_broker_can_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], demo_calls: list[Any]
) -> None:
    import controller.plant.local_broker as local_broker

    monkeypatch.setattr(local_broker, "_binaries", dict)
    assert main(["demo", "--headless", "--parts", "5", "--mqtt"]) == 2
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cellctl demo: --mqtt: no MQTT broker"), lines
    assert "apt-get install mosquitto" in lines[0] and "amqtt" in lines[0], lines
    assert not demo_calls
    assert main(["demo", "--headless", "--parts", "5", "--opcua"]) == 0  # OPC UA needs no broker


def test_run_refuses_a_negative_drain_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(["run", "--cell", "c.yaml", "--recipe", "x", "--drain-timeout", "-1"], capsys)
    assert "--drain-timeout: expected" in line, line


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "number of cameras (first K of the cell config) (default: 3)" in text, text
    assert "(default: plate-4h)" in text, text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 10" in text, text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"cellctl {version('inspection-cell-controller')}"


# ---------------------------------------------------------------------------------- item 10
def test_recipe_list_is_sorted_by_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "models").symlink_to(ROOT / "recipes/models")
    for stem, number in (("a-first", 5), ("b-second", 2), ("c-third", 1)):
        (folder / f"{stem}.yaml").write_text(
            GOOD.replace("name: plate-4h", f"name: {stem}").replace("number: 1", f"number: {number}")
        )
    (folder / "0-broken.yaml").write_text("name: [")
    assert main(["recipe", "list", str(folder)]) == 1  # an invalid file fails the listing
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["c-third", "b-second", "a-first", "0-broken"], rows


def test_recipe_list_on_a_missing_folder_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["recipe", "list", str(tmp_path / "nowhere")])
    out = capsys.readouterr()
    assert rc == 1 and out.out == "", out
    assert out.err.strip() == f"cellctl recipe list: {tmp_path / 'nowhere'}: no such folder"


def test_recipe_diff_exits_like_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = ROOT / "recipes/plate-4h.yaml", ROOT / "recipes/plate-4h-long.yaml"
    assert main(["recipe", "diff", str(a), str(b)]) == 1
    shutil.copy(a, tmp_path / "same.yaml")
    assert main(["recipe", "diff", str(a), str(tmp_path / "same.yaml")]) == 0
    assert "no differences" in capsys.readouterr().out
    # Trouble is 2, as diff has it: a broken file is not "they differ".
    (tmp_path / "bad.yaml").write_text(GOOD.replace("rule: any_fail", "rule: any_fial"))
    assert main(["recipe", "diff", str(a), str(tmp_path / "bad.yaml")]) == 2


def test_demo_names_a_missing_cell_file_not_the_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_calls: list[Any]
) -> None:
    assert main(["demo", "--cell", str(tmp_path / "nope.yaml"), "--headless", "--parts", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cellctl demo: --cell: {tmp_path / 'nope.yaml'}: no such file", err
    assert demo_calls == []


def test_demo_refuses_more_cameras_than_the_cell_has_in_one_line(
    capsys: pytest.CaptureFixture[str], demo_calls: list[Any]
) -> None:
    with pytest.raises(SystemExit) as e:  # a usage error, as any option out of range
        main(["demo", "--cameras", "7", "--headless", "--parts", "10"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "cellctl demo: --cameras: expected a whole number from 1 to 4"
    ), err
    assert demo_calls == []


#: How each command of the README's usage block exits when no service runs, by its first words:
#: None where it is or waits for the service (run, console).
USAGE_EXITS: dict[str, int | None] = {
    "demo": 0,  # accepted; it is not really run here (tests/e2e runs the demo)
    "contract": 0,
    "status": 1,  # no service: one line, exit 1
    "status --watch": 0,  # keeps trying until Ctrl-C
    "command": 1,
    "recipe validate": 0,
    "recipe list": 0,
    "recipe diff": 1,  # the two shipped recipes differ
    "recipe activate": 1,
    "run": None,
    "console": None,
}


def test_readme_usage_commands_exit_as_documented(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    demo_calls: list[Any],
) -> None:
    """Every command line of the README's usage block runs from a clone, as written, and exits as
    the README says; those that need the running service say in one line that there is none."""
    import glob
    import logging
    import shlex
    import time

    import controller.cli as cli

    for var in ("CELL_CONFIG", "CELL_RECIPES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CELLCTL_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setattr(cli, "INSTALLED_CELL", tmp_path / "none.yaml")
    monkeypatch.setattr(cli, "INSTALLED_RECIPES", tmp_path / "none")

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", ctrl_c)
    monkeypatch.chdir(ROOT)
    usage = (ROOT / "README.md").read_text().split("## Using it", 1)[1].split("```sh", 1)[1].split("```")[0]
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    libraries = {name: logging.getLogger(name).level for name in LIBRARIES}  # `-v` sets them
    ran = set()
    try:
        for ln in usage.strip().splitlines():
            words = shlex.split(ln.split("  #", 1)[0])
            assert words[0] == ".venv/bin/cellctl", ln
            text = " ".join(words[1:]) + " "
            key = max((k for k in USAGE_EXITS if text.startswith(k + " ")), key=len, default=None)
            assert key is not None, f"{ln}: add how it exits to USAGE_EXITS"
            if USAGE_EXITS[key] is None:
                continue
            args = [m for w in words[1:] for m in (sorted(glob.glob(w)) if "*" in w else [w])]
            started = len(demo_calls)
            rc = main(args)
            out = capsys.readouterr()
            assert rc == USAGE_EXITS[key], (ln, out)
            assert "Traceback" not in out.out + out.err, ln
            if rc == 1 and key not in ("recipe diff",):
                assert len(out.err.strip().splitlines()) == 1 and "no cell service" in out.err, (ln, out)
            ran.add(key)
            assert len(demo_calls) == started + (key == "demo"), ln  # a demo got as far as starting
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, lvl in libraries.items():
            logging.getLogger(name).setLevel(lvl)
    assert ran == {k for k, v in USAGE_EXITS.items() if v is not None}, ran


# ------------------------------------------------------------------ item 6
@pytest.mark.parametrize("bad", ["0", "-1", "3", "33", "many", "4.5"])
def test_contract_refuses_a_bad_ring_size_in_one_line(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    line = refused(["contract", "--ring-size", bad], capsys)
    assert line.startswith("cellctl contract: --ring-size: expected a whole number from 4 to 32"), line
    assert f"found '{bad}'" in line, line


def test_contract_prints_a_table_for_a_good_ring_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["contract", "--ring-size", "8"]) == 0
    assert "area" in capsys.readouterr().out
