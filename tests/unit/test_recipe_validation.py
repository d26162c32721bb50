"""One broken recipe per validation category, each through `cellctl recipe validate`."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from controller.cli import main
from controller.config import load_cell_config
from controller.recipes import check_recipe, diff_recipes, list_recipes, schema_markdown

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "recipes/models/demo_defects.onnx"
GOOD = (ROOT / "recipes/plate-4h.yaml").read_text().replace("models/demo_defects.onnx", str(MODEL))
CELL = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    rc = main(["recipe", "validate", "--cell", str(ROOT / "recipes/cells/demo-cell.yaml"), str(p)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.out + out.err


def test_good_recipe_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = validate(tmp_path, GOOD, capsys)
    assert rc == 0 and "valid for cell demo-cell" in out


CASES = [
    # (category, edit of the good recipe, text expected in the report)
    ("unknown key", ("fusion:\n  rule", "fusoin:\n  rule"), "did you mean 'fusion'"),
    ("wrong type", ("number: 1", "number: one"), "number: expected a whole number, found 'one'"),
    (
        "out of range",
        ("gain_db: 0.0", "gain_db: 99"),
        "cameras.top.gain_db: expected at most 48, found 99",
    ),
    ("missing field", ("number: 1\n", ""), "number: expected a value (required), found nothing"),
    ("duplicate camera", ("  right: {", "  top: {"), "duplicate key 'top'"),
    ("unknown camera", ("  right: {", "  rear: {"), "cameras.rear: expected a camera of cell demo-cell"),
    ("model missing", (str(MODEL), "models/nope.onnx"), "model.path: expected an ONNX file"),
    (
        "input size",
        ("input_size: [64, 64]", "input_size: [96, 96]"),
        "model.input_size: expected the model's input",
    ),
    ("unknown class", ("  spot: 0.5", "  dent: 0.5"), "thresholds.dent: expected a class of the model"),
    (
        "class order",
        ("[scratch, spot,", "[spot, scratch,"),
        "model.class_names: expected the model's classes",
    ),
    (
        "trigger outside",
        ("trigger_offset_mm: 0}\n  left", "trigger_offset_mm: -200}\n  left"),
        "fires at -50 mm",
    ),
    (
        "deadline",
        ("stop_on_confirm_failure", "decision_mm: 232\n  stop_on_confirm_failure"),
        "reject.decision_mm",
    ),
    ("alias", ("  top:   {", "  top: &t {"), "anchors and aliases are not allowed"),
    (
        "roi outside image",
        ("cameras:\n", "roi: [10, 10, 60, 40]\ncameras:\n"),
        "roi: expected a region inside",
    ),
]


@pytest.mark.parametrize(("category", "edit", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_category_is_reported_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], category: str, edit: tuple[str, str], expected: str
) -> None:
    assert edit[0] in GOOD, category
    text = GOOD.replace(edit[0], edit[1], 1)
    if category == "alias":
        text = text.replace("  left:  {exposure_us: 600, gain_db: 2.0, trigger_offset_mm: 0}", "  left: *t")
    rc, out = validate(tmp_path, text, capsys)
    assert rc == 1
    assert expected in out, out
    assert "r.yaml" in out


def test_line_numbers_point_at_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = validate(tmp_path, GOOD.replace("gain_db: 2.0, trigger", "gain_db: 60, trigger", 1), capsys)
    line = GOOD.splitlines().index("  left:  {exposure_us: 600, gain_db: 2.0, trigger_offset_mm: 0}") + 1
    assert f"r.yaml:{line}: cameras.left.gain_db" in out


def test_oversized_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = validate(tmp_path, GOOD + "#" * 300_000 + "\n", capsys)
    assert rc == 1 and "byte limit" in out


def test_model_with_other_output_count(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, 64, 64])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 2])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("Slice", ["m", "s", "e", "a"], ["scores"])],
        "g", [x], [y],
        [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", 2), ("a", 1))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "two.onnx")
    p = tmp_path / "r.yaml"
    p.write_text(GOOD.replace(str(MODEL), "two.onnx"))
    checked = check_recipe(p, CELL)
    assert checked.recipe is None
    text = "\n".join(str(pr) for pr in checked.problems)
    assert "model.kind: expected outputs a multilabel_classifier model gives" in text
    assert "model output (2,) is not 6 finite scores" in text


def test_list_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r.name: r for r in list_recipes(ROOT / "recipes")}
    assert {"plate-4h", "plate-4h-long"} <= set(rows)
    assert len(rows["plate-4h"].hash) == 12 and rows["plate-4h"].error is None
    (tmp_path / "broken.yaml").write_text("name: [")
    (broken,) = list_recipes(tmp_path)
    assert broken.error is not None
    assert main(["recipe", "list", str(ROOT / "recipes")]) == 0
    assert "plate-4h-long" in capsys.readouterr().out
    from controller.config import load_recipe

    a, b = load_recipe(ROOT / "recipes/plate-4h.yaml"), load_recipe(ROOT / "recipes/plate-4h-long.yaml")
    changes = {f: (x, y) for f, x, y in diff_recipes(a, b)}
    assert changes["cameras.top.trigger_offset_mm"] == (0.0, 20.0)
    assert changes["thresholds.scratch"] == (0.5, 0.4)
    assert "name" in changes and "model.path" not in changes
    assert (
        main(
            ["recipe", "diff", str(ROOT / "recipes/plate-4h.yaml"), str(ROOT / "recipes/plate-4h-long.yaml")]
        )
        == 1  # they differ, as diff(1) says
    )
    assert "reject.uncertain_band: 0.0 -> 0.1" in capsys.readouterr().out


def test_schema_document_is_current() -> None:
    assert (ROOT / "recipes/SCHEMA.md").read_text().strip() == schema_markdown().strip()
