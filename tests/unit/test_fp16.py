"""FP16 on the CUDA provider, checked here on the CPU provider (which runs the converted model):
the conversion keeps float32 inputs and outputs, its outputs are checked against FP32's on the
validation images, and a model outside the recipe's tolerance is refused with the reason."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import GpuOptions, ModelLoadError, OnnxRunner
from controller.inference.transforms import TransformError, fp16_model, uint8_prologue
from controller.inference.validation import validation_batch
from simulators.render import render

MODEL = Path(__file__).resolve().parents[2] / "recipes/models/demo_defects.onnx"
CPU = ("CPUExecutionProvider",)


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 3, 64, 64)).astype(np.float32)


def test_the_converted_model_keeps_float32_io_and_stays_close_to_fp32() -> None:
    half = onnx.load_from_string(fp16_model(MODEL))
    f32 = TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [f32]
    assert {o.type.tensor_type.elem_type for o in half.graph.output} == {f32}
    assert any(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    fp16 = OnnxRunner(MODEL, CPU, 1, fp16=True)
    fp32 = OnnxRunner(MODEL, CPU, 1)
    assert fp16.fp16 and not fp32.fp16
    assert fp16.fp16_max_diff is not None and fp16.fp16_max_diff <= 0.02
    (a,), (b,) = fp16.run_all(_batch(8)), fp32.run_all(_batch(8))
    assert a.dtype == np.float32 and np.abs(a - b).max() <= 0.02


def test_fp16_is_only_the_default_on_the_cuda_provider() -> None:
    """`inference.fp16` is TensorRT's own engine setting there; on the CPU it changes nothing."""
    assert not OnnxRunner(MODEL, CPU, 1, GpuOptions(fp16=True)).fp16


def test_fp16_outside_the_recipes_tolerance_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"FP16 refused: output 'scores' differs from FP32 by up to"):
        OnnxRunner(MODEL, CPU, 1, fp16=True, fp16_tolerance=1e-7)
    # A model whose values leave FP16's range (65,504): its constant is clamped, its output far off.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 1, 1])
    k = numpy_helper.from_array(np.array(1e6, dtype=np.float32), "k")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["big"]), helper.make_node("ReduceMax", ["big"], ["y"])],
        "overflow", [x], [y], [k],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "overflow.onnx")
    assert OnnxRunner(tmp_path / "overflow.onnx", CPU, 1).run_all(_batch(2)[:, :, :8, :8])[0].max() > 1e5
    with pytest.raises(ModelLoadError, match="FP16 refused: output 'y' differs"):
        OnnxRunner(tmp_path / "overflow.onnx", CPU, 1, fp16=True, fp16_tolerance=1.0)


def test_fp16_is_checked_on_the_recipes_validation_images(tmp_path: Path) -> None:
    folder = tmp_path / "validation"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(render(10 + k, 0, ())).save(folder / f"part{k}.png")
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    batch = validation_batch(folder, pre)
    assert batch is not None and batch.shape == (3, 3, 64, 64)
    runner = OnnxRunner(MODEL, CPU, 1, fp16=True, validation=batch)
    assert runner.fp16_max_diff is not None and runner.fp16_max_diff <= 0.02
    assert validation_batch(None, pre) is None
    with pytest.raises(ValueError, match="no image"):
        validation_batch(tmp_path, pre)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "small.png")
    with pytest.raises(ValueError, match=r"small\.png"):
        validation_batch(folder, pre)


def test_fp16_without_the_converter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    with pytest.raises(ModelLoadError, match=r"onnxconverter-common \(pip install"):
        OnnxRunner(MODEL, CPU, 1, fp16=True)


def test_the_uint8_prologue_needs_one_float_nchw_input(tmp_path: Path) -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3, 8, 8])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "two.onnx")
    with pytest.raises(TransformError, match="2 inputs"):
        uint8_prologue(tmp_path / "two.onnx", (0.0,) * 3, (1.0,) * 3)
    runner = OnnxRunner(tmp_path / "two.onnx", CPU, 1)
    assert not runner.prepare_uint8((0.0,) * 3, (1.0,) * 3, force=True)  # stays on the float path
