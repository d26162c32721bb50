"""Each model kind on a real ONNX model of its layout, built here, run by onnxruntime through the
controller's runner and inference worker, its outputs turned into view results by its adapter."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from controller.config import Recipe
from controller.core.types import ReasonCode, ViewResult, ViewStatus
from controller.inference.adapters import (
    AnomalyAdapter,
    ClassifierAdapter,
    DetectorAdapter,
    SegmentationAdapter,
    make_adapter,
    nms,
)
from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import OnnxRunner
from controller.inference.worker import InferenceWorker, Outcome
from controller.interfaces import Frame

SIZE = 32


def save(tmp_path: Path, name: str, nodes: list[onnx.NodeProto], outputs: list[onnx.ValueInfoProto],
         inits: list[onnx.TensorProto] | None = None) -> Path:  # fmt: skip
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])
    graph = helper.make_graph(nodes, name, [x], outputs, inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def infer(path: Path, adapter: object, images: list[np.ndarray]) -> list[ViewResult]:
    """Through the controller's own path: preprocessing, batching worker, runner, adapter."""
    runner = OnnxRunner(path, ("CPUExecutionProvider",), 1)
    spec = PreprocessSpec((SIZE, SIZE), (SIZE, SIZE), None, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
    got: dict[int, ViewResult] = {}
    done = threading.Event()

    def sink(outcomes: list[Outcome]) -> None:
        got.update((pid, res) for pid, res, *_ in outcomes)
        if len(got) == len(images):
            done.set()

    worker = InferenceWorker(runner, Preprocessor(spec), adapter, sink, max_batch=4, queue_size=16)  # type: ignore[arg-type]
    worker.start()
    try:
        for i, img in enumerate(images):
            worker.submit(i, Frame("top", i, 0.0, 0.0, img, lambda: None))
        assert done.wait(10.0)
    finally:
        worker.stop()
    return [got[i] for i in range(len(images))]


def image(rgb: tuple[int, int, int], blob: tuple[int, int, int, int] | None = None,
          blob_rgb: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:  # fmt: skip
    img = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    img[:] = rgb
    if blob is not None:
        x, y, w, h = blob
        img[y : y + h, x : x + w] = blob_rgb
    return img


def test_classifier_softmax_over_logits_top_class_decides(tmp_path: Path) -> None:
    # Mean colour per channel → logits for (good, rust, paint): red means rust, blue means paint.
    w = numpy_helper.from_array(np.array([[0, 8, 0], [4, 0, 0], [0, 0, 8]], dtype=np.float32), "w")
    path = save(
        tmp_path, "classifier",
        [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["m", "w"], ["logits"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], [w],
    )  # fmt: skip
    adapter = ClassifierAdapter(("good", "rust", "paint"), ("good",), {"paint": 0.9}, logits=True,
                                min_confidence=0.6)  # fmt: skip
    good, rust, paint, grey = infer(
        path, adapter, [image((0, 255, 0)), image((255, 0, 0)), image((0, 0, 90)), image((128, 128, 128))]
    )
    assert good.status is ViewStatus.OK and good.defects == ()
    assert rust.defects == ("rust",) and abs(sum(rust.scores) - 1.0) < 1e-3
    assert paint.status is ViewStatus.OK and paint.defects == ()  # top class, but under its 0.9 threshold
    assert grey.status is ViewStatus.UNCERTAIN and grey.cause is ReasonCode.UNCERTAIN


def test_anomaly_score_and_map_report_the_region_over_threshold(tmp_path: Path) -> None:
    # anomalib's layout: anomaly_map (n, 1, H, W) and pred_score (n,); here brightness is anomaly.
    path = save(
        tmp_path, "anomaly",
        [helper.make_node("ReduceMean", ["images"], ["anomaly_map"], axes=[1], keepdims=1),
         helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0)],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["n", 1, SIZE, SIZE]),
         helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["n"])],
    )  # fmt: skip
    names = OnnxRunner(path, ("CPUExecutionProvider",), 1).info.output_names
    assert names == ("anomaly_map", "pred_score")
    score, amap = names.index("pred_score"), names.index("anomaly_map")
    adapter = AnomalyAdapter(0.2, 0.8, 0.5, uncertain_band=0.1, score_output=score, map_output=amap)
    clean, spot, faint = infer(
        path, adapter, [image((40, 40, 40)), image((40, 40, 40), (5, 7, 6, 4)), image((117, 117, 117))]
    )
    assert clean.status is ViewStatus.OK and clean.defects == () and clean.scores == (0.0,)
    assert spot.defects == ("anomaly",) and spot.scores == (1.0,)
    assert spot.regions == (("anomaly", 5, 7, 6, 4),)
    assert faint.status is ViewStatus.UNCERTAIN  # normalised 0.43: just under the threshold


def yolo_model(tmp_path: Path, raw: np.ndarray) -> Path:
    """A detector in the YOLO export layout (n, 4 + classes, anchors): constant boxes, plus
    the mean of the image times zero so the output depends on the input like a real one."""
    rows, anchors = raw.shape
    return save(
        tmp_path, "detector",
        [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["m", "zeros"], ["z"]),
         helper.make_node("Reshape", ["z", "shape"], ["zr"]),
         helper.make_node("Add", ["zr", "boxes"], ["output0"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["n", rows, anchors])],
        [numpy_helper.from_array(raw[None].astype(np.float32), "boxes"),
         numpy_helper.from_array(np.zeros((3, rows * anchors), dtype=np.float32), "zeros"),
         numpy_helper.from_array(np.array([-1, rows, anchors], dtype=np.int64), "shape")],
    )  # fmt: skip


def test_detector_nms_per_class_thresholds_and_minimum_area(tmp_path: Path) -> None:
    anchors = np.array([
        # cx, cy, w, h, scratch, dent
        [10, 10, 8, 8, 0.90, 0.0],   # scratch
        [11, 10, 8, 8, 0.80, 0.0],   # the same scratch again: suppressed
        [11, 10, 8, 8, 0.00, 0.70],  # a dent at the same place: another class, kept
        [25, 25, 2, 2, 0.00, 0.95],  # a dent too small (4 px² < 10)
        [25, 5, 6, 6, 0.40, 0.00],   # a scratch under its 0.5 threshold
    ], dtype=np.float32).T  # fmt: skip
    path = yolo_model(tmp_path, anchors)
    adapter = DetectorAdapter(("scratch", "dent"), {"scratch": 0.5, "dent": 0.6}, min_area_px={"dent": 10})
    (res,) = infer(path, adapter, [image((0, 0, 0))])
    assert res.defects == ("scratch", "dent")
    assert res.regions == (("scratch", 6, 6, 8, 8), ("dent", 7, 6, 8, 8))
    assert res.scores == (0.9, 0.95)  # best score per class, kept or not


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.7], dtype=np.float32), 0.5).tolist() == [1, 2]


def test_segmentation_masks_with_minimum_area(tmp_path: Path) -> None:
    # Masks (background, stain): background 0.5 everywhere, stain = red channel.
    path = save(
        tmp_path, "segmentation",
        [helper.make_node("Slice", ["images", "s", "e", "a"], ["red"]),
         helper.make_node("Mul", ["red", "zero"], ["z"]),
         helper.make_node("Add", ["z", "half"], ["bg"]),
         helper.make_node("Concat", ["bg", "red"], ["masks"], axis=1)],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["n", 2, SIZE, SIZE])],
        [numpy_helper.from_array(np.array([0], dtype=np.int64), "s"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "e"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "a"),
         numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero"),
         numpy_helper.from_array(np.full(1, 0.5, dtype=np.float32), "half")],
    )  # fmt: skip
    adapter = SegmentationAdapter(
        ("background", "stain"), ("background",), {"stain": 0.6}, min_area_px={"stain": 12}
    )
    clean, stain, speck = infer(
        path, adapter,
        [image((0, 0, 0)),
         image((0, 0, 0), (3, 4, 5, 3), (255, 0, 0)),
         image((0, 0, 0), (20, 20, 2, 2), (255, 0, 0))],
    )  # fmt: skip
    assert clean.defects == () and stain.defects == ("stain",)
    assert stain.regions == (("stain", 3, 4, 5, 3),)
    assert speck.defects == ()  # 4 px², under the 12 px² minimum


def test_recipe_picks_the_adapter_by_kind_and_outputs_by_name() -> None:
    base = {
        "schema_version": 1, "name": "x", "number": 1, "cameras": {"top": {}},
        "model": {"path": "m.onnx", "input_size": [SIZE, SIZE], "class_names": ["anomaly"],
                  "kind": "anomaly", "norm_min": 1.0, "norm_max": 3.0},
        "thresholds": {"anomaly": 0.7},
    }  # fmt: skip
    adapter = make_adapter(Recipe.model_validate(base), ("pred_score", "anomaly_map"))
    assert (
        isinstance(adapter, AnomalyAdapter)
        and adapter.map_output == 1
        and adapter.threshold == np.float32(0.7)
    )
    with pytest.raises(ValueError, match="no output 'anomaly_map'"):
        make_adapter(Recipe.model_validate(base), ("score",))
