"""The real shipped ONNX model through the real onnxruntime CPU session."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from controller.core.types import ReasonCode, ViewResult, ViewStatus
from controller.inference.adapters import MultiLabelAdapter
from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import ModelLoadError, OnnxRunner
from controller.inference.worker import InferenceWorker
from controller.interfaces import Frame
from simulators.parts import DEFECTS
from simulators.render import render

MODEL = Path(__file__).resolve().parents[2] / "recipes/models/demo_defects.onnx"


@pytest.fixture(scope="module")
def runner() -> OnnxRunner:
    return OnnxRunner(MODEL)


def test_runner_reports_provider_hash_and_classes(runner: OnnxRunner) -> None:
    card = json.loads(MODEL.with_suffix(".json").read_text())
    assert runner.info.provider == "CPUExecutionProvider"
    assert runner.info.sha256 == card["sha256"]
    assert runner.info.class_names == DEFECTS


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        OnnxRunner(tmp_path / "nope.onnx")


def test_preprocess_writes_normalised_nchw_into_the_batch_slot() -> None:
    pre = Preprocessor(
        PreprocessSpec((64, 64), (32, 32), roi=(0, 0, 64, 64), mean=(100, 100, 100), std=(2, 2, 2))
    )
    img = np.full((64, 64, 3), 104, dtype=np.uint8)
    batch = np.zeros((2, 3, 32, 32), dtype=np.float32)
    pre(img, batch[1])
    assert np.allclose(batch[1], 2.0) and np.all(batch[0] == 0)
    with pytest.raises(ValueError, match="expected"):
        pre(np.zeros((10, 10, 3), np.uint8), batch[0])
    with pytest.raises(ValueError, match="does not fit"):
        Preprocessor(PreprocessSpec((64, 64), (32, 32), roi=(40, 40, 40, 40)))


def test_model_finds_each_defect_class(runner: OnnxRunner) -> None:
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    adapter = MultiLabelAdapter(DEFECTS, {})
    batch = np.empty((len(DEFECTS) + 1, 3, 64, 64), dtype=np.float32)
    pre(render(5, 0, ()), batch[0])
    for i, d in enumerate(DEFECTS):
        pre(render(100 + i, 1, (d,)), batch[i + 1])
    scores = runner.run(batch)
    results = [adapter("top", [s]) for s in scores]
    assert results[0].defects == ()
    for i, d in enumerate(DEFECTS):
        assert results[i + 1].defects == (d,), f"{d}: {results[i + 1]}"


def test_adapter_refuses_malformed_output() -> None:
    adapter = MultiLabelAdapter(DEFECTS, {})
    with pytest.raises(ValueError, match="finite"):
        adapter("top", [np.full(len(DEFECTS), np.nan, dtype=np.float32)])


def test_worker_batches_and_reports_overload(runner: OnnxRunner) -> None:
    got: list[tuple[int, ViewResult]] = []
    done = threading.Event()

    def sink(pid: int, res: ViewResult, t0: float, t1: float, frame: Frame) -> None:
        got.append((pid, res))
        if len(got) == 12:
            done.set()

    spec = PreprocessSpec((64, 64), (64, 64))
    w = InferenceWorker(
        runner, Preprocessor(spec), MultiLabelAdapter(DEFECTS, {}), sink, max_batch=4, queue_size=8
    )
    img = render(1, 0, ())
    frames = [Frame("top", i, 0.0, 0.0, img, lambda: None) for i in range(12)]
    accepted = [w.submit(i, f) for i, f in enumerate(frames)]  # worker not started: queue fills
    w.start()
    assert done.wait(10.0)
    w.stop()
    assert accepted.count(False) == 4
    overloaded = [r for _, r in got if r.cause is ReasonCode.OVERLOAD]
    assert len(overloaded) == 4 and all(r.status is ViewStatus.FAILED for r in overloaded)
    assert sum(r.status is ViewStatus.OK for _, r in got) == 8
    assert w.batches >= 2


def test_uncertain_band_makes_a_near_miss_uncertain() -> None:
    adapter = MultiLabelAdapter(("scratch", "spot"), {"scratch": 0.5}, default=0.5, uncertain_band=0.1)
    near = adapter("top", [np.array([0.45, 0.1], dtype=np.float32)])
    assert (near.status, near.cause, near.defects) == (
        ViewStatus.UNCERTAIN,
        ReasonCode.UNCERTAIN,
        ("scratch",),
    )
    clear = adapter("top", [np.array([0.2, 0.1], dtype=np.float32)])
    assert clear.status is ViewStatus.OK and clear.defects == ()
    over = adapter("top", [np.array([0.45, 0.9], dtype=np.float32)])
    assert over.status is ViewStatus.OK and over.defects == ("spot",)


def test_io_binding_gives_the_same_outputs_as_a_plain_run() -> None:
    plain = OnnxRunner(MODEL, ("CPUExecutionProvider",), 1)
    bound = OnnxRunner(MODEL, ("CPUExecutionProvider",), 1, io_binding=True)
    batch = np.random.default_rng(3).normal(size=(5, 3, 64, 64)).astype(np.float32)
    assert not plain.io_binding and bound.io_binding
    (a,), (b,) = plain.run_all(batch), bound.run_all(batch)
    assert a.shape == (5, 6) and np.array_equal(a, b)
