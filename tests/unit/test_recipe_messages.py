"""Issue 15, item 3: every validator message is `file:line: field: expected …, found …` in our words."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "recipes/models/demo_defects.onnx"
CELL = ROOT / "recipes/cells/demo-cell.yaml"
GOOD = (ROOT / "recipes/plate-4h.yaml").read_text().replace("models/demo_defects.onnx", str(MODEL))
LINES = GOOD.splitlines()
#: Words of the validation library that must never reach a user.
FOREIGN = ("Input should", "Value error", "validation error", "pydantic", "For further information")


def line_of(text: str) -> int:
    return next(i for i, ln in enumerate(LINES, 1) if text in ln)


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    rc = main(["recipe", "validate", "--cell", str(CELL), str(p)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    for word in FOREIGN:
        assert word not in text, text
    return rc, text.strip().splitlines()


@pytest.mark.parametrize(
    ("edit", "line_text", "expected"),
    [
        (("gain_db: 0.0", "gain_db: 99"), "  top:", "cameras.top.gain_db: expected at most 48, found 99"),
        (("number: 1", "number: one"), "number:", "number: expected a whole number, found 'one'"),
        (("number: 1", "number: 0"), "number:", "number: expected at least 1, found 0"),
        (
            ("rule: any_fail", "rule: all"),
            "  rule:",
            "fusion.rule: expected one of 'any_fail', 'k_of_n', 'weighted'",
        ),
        (("name: plate-4h", "name: 'plate 4h'"), "name:", "name: expected text matching"),
        (
            ("  spot: 0.5", "  spot: 1.5"),
            "  spot: 1.5",
            "thresholds.spot: expected a threshold in (0, 1], found 1.5",
        ),
        (("  spot: 0.5", "  dent: 0.5"), "  dent:", "thresholds.dent: expected a class of the model"),
        (
            ("rule: any_fail", "rule: k_of_n\n  k: 5"),
            "  k: 5",
            "fusion.k: expected at most the recipe's 3 cameras, found 5",
        ),
        (("exposure_us: 600, gain", "exposure_uss: 600, gain"), "  left:", "did you mean 'exposure_us'?"),
        (("save_rejected", "save_rejectd"), "  save_rejectd", "did you mean 'save_rejected'?"),
    ],
)
def test_problem_names_the_line_and_field_in_our_words(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: tuple[str, str],
    line_text: str,
    expected: str,
) -> None:
    assert edit[0] in GOOD
    text = GOOD.replace(edit[0], edit[1], 1)
    rc, lines = validate(tmp_path, text, capsys)
    assert rc == 1
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(line_text))
    hits = [ln for ln in lines if expected in ln]
    assert hits, lines
    assert hits[0].startswith(f"{tmp_path / 'r.yaml'}:{line}: "), (hits, line)
    assert all(len(ln) < 300 for ln in lines), lines  # never the whole recipe dumped


def test_all_problems_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        GOOD.replace("  spot: 0.5", "  spot: 1.5")
        .replace("  crack: 0.5", "  dent: 0.5")
        .replace("rule: any_fail", "rule: k_of_n\n  k: 5")
    )
    rc, lines = validate(tmp_path, text, capsys)
    assert rc == 1
    for field in ("thresholds.spot", "thresholds.dent", "fusion.k"):
        assert any(f": {field}: expected" in ln for ln in lines), (field, lines)


def test_cross_field_problems_come_with_field_problems_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace("gain_db: 0.0", "gain_db: 99").replace("  spot: 0.5", "  spot: 1.5")
    text = text.replace("  crack: 0.5", "  dent: 0.5").replace("rule: any_fail", "rule: k_of_n\n  k: 5")
    rc, lines = validate(tmp_path, text, capsys)
    assert rc == 1
    for field in ("cameras.top.gain_db", "thresholds.spot", "thresholds.dent", "fusion.k"):
        assert any(f": {field}: expected" in ln for ln in lines), (field, lines)


def test_model_cross_checks_point_at_their_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD.replace("  kind: multilabel_classifier", "  kind: classifier\n  good_classes: [fine]")
    rc, lines = validate(tmp_path, text, capsys)
    line = text.splitlines().index("  good_classes: [fine]") + 1
    assert rc == 1
    assert any(
        ln.startswith(f"{tmp_path / 'r.yaml'}:{line}: model.good_classes: expected") for ln in lines
    ), lines


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text(""), "an empty file"),
        (lambda p: p.write_text("# only a comment\n"), "an empty file"),
        (lambda p: p.mkdir(), "a folder (directory), not a file"),
        (lambda p: p.write_text(CELL.read_text()), "a cell config, not a recipe"),
    ],
    ids=["missing", "empty", "comment only", "folder", "cell config"],
)
def test_file_level_problems_are_clean_one_liners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, says: str
) -> None:
    p = tmp_path / "r.yaml"
    make(p)  # type: ignore[operator]
    rc = main(["recipe", "validate", "--cell", str(CELL), str(p)])
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert rc == 1
    assert len(lines) == 1 and lines[0].startswith(f"{p}") and says in lines[0], lines
    assert "(top)" not in lines[0] and "expected valid YAML" not in lines[0], lines


def test_did_you_mean_in_a_cell_config_camera(tmp_path: Path) -> None:
    from controller.config import ConfigError, load_cell_config

    p = tmp_path / "cell.yaml"
    p.write_text(CELL.read_text().replace('SIM-1", station_mm', 'SIM-1", statoin_mm'))
    with pytest.raises(ConfigError) as e:
        load_cell_config(p)
    assert any(
        "cameras.1.statoin_mm: expected a known key (did you mean 'station_mm'?)" in str(pr)
        for pr in e.value.problems
    ), e.value


def test_duplicate_key_has_its_line_in_the_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD.replace("  right: {", "  top: {")
    rc, lines = validate(tmp_path, text, capsys)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("  top:   {"))
    second = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("  top: {"))
    assert rc == 1
    assert lines == [
        f"{tmp_path / 'r.yaml'}:{second}: cameras.top: expected each key once, found duplicate key 'top' "
        f"(first at line {line})"
    ], lines


def test_refusal_over_the_api_carries_every_problem_as_a_list(tmp_path: Path) -> None:
    import asyncio
    import json
    import shutil
    from types import SimpleNamespace

    from controller.api import ApiLimits, ControlApi
    from controller.config import load_cell_config, load_recipe
    from controller.service import CellService

    folder = tmp_path / "recipes"
    folder.mkdir()
    for p in (ROOT / "recipes").glob("*.yaml"):
        shutil.copy(p, folder / p.name)
    (folder / "models").symlink_to(ROOT / "recipes/models")
    bad = (
        (ROOT / "recipes/plate-4h.yaml")
        .read_text()
        .replace("name: plate-4h", "name: bad")
        .replace("number: 1", "number: 9")
        .replace("  spot: 0.5", "  spot: 1.5")
        .replace("  crack: 0.5", "  dent: 0.5")
        .replace("rule: any_fail", "rule: k_of_n\n  k: 5")
    )
    (folder / "bad.yaml").write_text(bad)
    cell = load_cell_config(CELL)
    cell = cell.model_copy(update={"cameras": cell.cameras[:3]})
    cams = {c.name: SimpleNamespace(stats=SimpleNamespace(connected=True)) for c in cell.cameras}
    svc = CellService(
        cell, load_recipe(folder / "plate-4h.yaml"), folder, SimpleNamespace(), cams, "r", tmp_path / "d"
    )  # type: ignore[arg-type]
    svc.store.start({"cell": cell.name, "recipe": "plate-4h"})
    sock = tmp_path / "api" / "cell.sock"

    async def go() -> dict[str, object]:
        api = ControlApi(svc, sock, ApiLimits(activate_per_s=100, activate_burst=100))
        await api.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(json.dumps({"op": "recipe_activate", "name": "bad"}).encode() + b"\n")
            line = await asyncio.wait_for(reader.readline(), 60)
            writer.close()
            return json.loads(line)  # type: ignore[no-any-return]
        finally:
            await api.stop()

    try:
        reply = asyncio.run(go())
    finally:
        for stack in svc.stacks.values():
            if stack.worker.alive:
                stack.worker.stop()
        svc.store.close()
    assert reply["ok"] is False and reply["result"] == "invalid", reply
    problems = reply["problems"]
    assert isinstance(problems, list) and len(problems) == 3, reply
    assert all(p.startswith(str(folder / "bad.yaml")) and "; " not in p for p in problems), problems
    assert isinstance(reply["error"], str) and "\n" not in reply["error"] and "(and 2 more)" in reply["error"]
