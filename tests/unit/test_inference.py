"""The real shipped ONNX model through the real onnxruntime CPU session."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from controller.core.types import ReasonCode, ViewResult, ViewStatus
from controller.inference.adapters import MultiLabelAdapter, adapt_all
from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import GpuOptions, ModelLoadError, OnnxRunner
from controller.inference.worker import InferenceWorker, Outcome
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
    (scores,) = runner.run_all(batch)
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

    def sink(outcomes: list[Outcome]) -> None:
        got.extend((pid, res) for pid, res, *_ in outcomes)
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


def _collect(worker_args: dict[str, object], frames: list[Frame], n_results: int) -> dict[int, ViewResult]:
    got: dict[int, ViewResult] = {}
    done = threading.Event()

    def sink(outcomes: list[Outcome]) -> None:
        got.update((pid, res) for pid, res, *_ in outcomes)
        if len(got) == n_results:
            done.set()

    w = InferenceWorker(sink=sink, **worker_args)  # type: ignore[arg-type]
    w.start()
    for i, f in enumerate(frames):
        assert w.submit(i, f)
    assert done.wait(20.0), f"{len(got)} of {n_results} results"
    w.stop()
    assert not w.alive
    return got


def test_each_result_belongs_to_its_own_view(runner: OnnxRunner) -> None:
    """Views stream in while earlier batches run: every score must be its own image's."""
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    adapter = MultiLabelAdapter(DEFECTS, {})
    images = [render(200 + i, 0, (DEFECTS[i % len(DEFECTS)],) if i % 3 else ()) for i in range(60)]
    slot = np.empty((1, 3, 64, 64), dtype=np.float32)
    expected = []
    for img in images:
        pre(img, slot[0])
        expected.append(adapter("top", [runner.run_all(slot)[0][0]]).scores)
    frames = [Frame("top", i, 0.0, 0.0, img, lambda: None) for i, img in enumerate(images)]
    args = {"runner": runner, "preprocess": pre, "adapter": adapter, "max_batch": 4, "queue_size": 64}
    got = _collect(args, frames, len(frames))
    assert [got[i].scores for i in range(len(frames))] == expected


def test_a_bad_frame_fails_alone_and_a_failed_run_fails_its_batch(runner: OnnxRunner) -> None:
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    good = render(1, 0, ())
    frames = [Frame("top", i, 0.0, 0.0, good, lambda: None) for i in range(3)]
    frames[1] = Frame("top", 1, 0.0, 0.0, np.zeros((48, 64, 3), np.uint8), lambda: None)
    args = {"runner": runner, "preprocess": pre, "adapter": MultiLabelAdapter(DEFECTS, {}), "max_batch": 4}
    got = _collect(args, frames, 3)
    assert (got[1].status, got[1].cause) == (ViewStatus.FAILED, ReasonCode.BAD_FRAME)
    assert got[0].status is ViewStatus.OK and got[2].status is ViewStatus.OK
    # An adapter that cannot read the model's outputs fails every view of the run, none is lost.
    args["adapter"] = MultiLabelAdapter(("only", "two"), {})
    got = _collect(args, frames[:1] * 5, 5)
    assert {(r.status, r.cause) for r in got.values()} == {(ViewStatus.FAILED, ReasonCode.INFERENCE_FAILED)}


def test_stop_finishes_the_views_already_queued(runner: OnnxRunner) -> None:
    got: list[int] = []
    w = InferenceWorker(
        runner, Preprocessor(PreprocessSpec((64, 64), (64, 64))), MultiLabelAdapter(DEFECTS, {}),
        lambda outcomes: got.extend(o[0] for o in outcomes), max_batch=4, queue_size=32,
    )  # fmt: skip
    img = render(1, 0, ())
    for i in range(20):
        w.submit(i, Frame("top", i, 0.0, 0.0, img, lambda: None))
    w.start()
    w.stop()
    assert sorted(got) == list(range(20)) and not w.alive


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


def test_tensorrt_gets_one_profile_for_every_batch_size(tmp_path: Path) -> None:
    gpu = GpuOptions(device_id=1, fp16=True, trt_cache=tmp_path / "trt", max_batch=6)
    opts = gpu.provider_options("TensorrtExecutionProvider", ("image", ("N", 3, 224, 224)))
    assert opts["trt_profile_min_shapes"] == "image:1x3x224x224"
    assert opts["trt_profile_max_shapes"] == opts["trt_profile_opt_shapes"] == "image:6x3x224x224"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    assert (opts["device_id"], opts["trt_fp16_enable"]) == (1, True)
    # A model whose image size is not fixed gets no profile (TensorRT then sizes engines itself).
    assert "trt_profile_min_shapes" not in gpu.provider_options(
        "TensorrtExecutionProvider", ("x", ("N", 3, "H", "W"))
    )
    assert gpu.provider_options("CUDAExecutionProvider") == {"device_id": 1}
    assert gpu.provider_options("CPUExecutionProvider") == {}


class _GatedPreprocessor(Preprocessor):
    """Holds the first view's preprocessing until the test opens the gate."""

    def __init__(self, spec: PreprocessSpec) -> None:
        super().__init__(spec)
        self.gate = threading.Event()

    def __call__(self, image: np.ndarray, out: np.ndarray) -> None:
        assert self.gate.wait(10.0)
        super().__call__(image, out)


@pytest.mark.parametrize("prep_threads", [1, 3])
def test_the_views_of_a_part_run_together(runner: OnnxRunner, prep_threads: int) -> None:
    """Under a steady stream the cameras of one part hand their views over together: a batch
    takes every view that has arrived, not just the first one written while the rest queue."""
    sizes: list[int] = []
    done = threading.Event()

    def sink(outcomes: list[Outcome]) -> None:
        sizes.append(len(outcomes))
        if sum(sizes) == 4:
            done.set()

    pre = _GatedPreprocessor(PreprocessSpec((64, 64), (64, 64)))
    w = InferenceWorker(
        runner, pre, MultiLabelAdapter(DEFECTS, {}), sink, max_batch=8, prep_threads=prep_threads
    )
    w.start()
    img = render(1, 0, ())
    for i in range(4):
        assert w.submit(i, Frame(f"cam{i}", i, 0.0, 0.0, img, lambda: None))
    pre.gate.set()
    assert done.wait(10.0)
    w.stop()
    assert sizes == [4] and w.batches == 1


def test_several_preparing_threads_keep_each_result_with_its_view(runner: OnnxRunner) -> None:
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    adapter = MultiLabelAdapter(DEFECTS, {})
    images = [render(300 + i, 0, (DEFECTS[i % len(DEFECTS)],) if i % 2 else ()) for i in range(40)]
    slot = np.empty((1, 3, 64, 64), dtype=np.float32)
    expected = []
    for img in images:
        pre(img, slot[0])
        expected.append(adapter("top", [runner.run_all(slot)[0][0]]).scores)
    frames = [Frame("top", i, 0.0, 0.0, img, lambda: None) for i, img in enumerate(images)]
    frames[7] = Frame("top", 7, 0.0, 0.0, np.zeros((48, 64, 3), np.uint8), lambda: None)
    args = {"runner": runner, "preprocess": pre, "adapter": adapter, "max_batch": 8, "prep_threads": 4}
    got = _collect(args, frames, len(frames))
    assert (got[7].status, got[7].cause) == (ViewStatus.FAILED, ReasonCode.BAD_FRAME)
    assert [got[i].scores for i in range(len(frames)) if i != 7] == expected[:7] + expected[8:]


def test_the_worker_warms_its_runner_before_the_first_view() -> None:
    """A batch size met for the first time costs the GPU tens to hundreds of ms (cuDNN's search):
    a worker never meets one, even when its runner was not warmed by whoever built it."""
    fresh = OnnxRunner(MODEL, ("CPUExecutionProvider",), 1)
    assert fresh.warmed == 0
    InferenceWorker(
        fresh, Preprocessor(PreprocessSpec((64, 64), (64, 64))), MultiLabelAdapter(DEFECTS, {}),
        lambda outcomes: None, max_batch=5,
    )  # fmt: skip
    assert fresh.warmed == 5  # at construction (off the control loop), not at start


def test_a_batch_adapts_as_its_views_one_by_one() -> None:
    adapter = MultiLabelAdapter(("scratch", "spot"), {"scratch": 0.5}, default=0.5, uncertain_band=0.1)
    scores = np.array([[0.45, 0.1], [0.2, 0.1], [0.45, 0.9]], dtype=np.float32)
    cams = ["a", "b", "c"]
    assert adapt_all(adapter, cams, [scores]) == [adapter(c, [s]) for c, s in zip(cams, scores, strict=True)]
    with pytest.raises(ValueError, match="finite"):
        adapt_all(adapter, cams, [np.array([[0.1, np.nan]] * 3, dtype=np.float32)])
    with pytest.raises(ValueError, match="views"):
        adapt_all(adapter, cams, [scores[:2]])


def test_on_a_gpu_every_run_has_the_full_batchs_shape() -> None:
    """cuDNN re-plans every convolution when the batch size changes: a runner that pads (GPU)
    gets the whole buffer every time, and each view still gets its own row's result."""
    padded = OnnxRunner(MODEL, ("CPUExecutionProvider",), 1)
    padded.pad_to_batch = True  # as on a GPU provider
    shapes: list[int] = []
    run_all, run = padded.run_all, padded._run

    def spy(session: object, name: str, batch: np.ndarray) -> list[np.ndarray]:
        shapes.append(len(batch))
        return run(session, name, batch)

    padded._run = spy  # type: ignore[method-assign]
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    adapter = MultiLabelAdapter(DEFECTS, {})
    images = [render(700 + i, 0, (DEFECTS[i % len(DEFECTS)],) if i % 2 else ()) for i in range(11)]
    slot = np.empty((1, 3, 64, 64), dtype=np.float32)
    expected = []
    for img in images:
        pre(img, slot[0])
        expected.append(adapter("top", [run_all(slot)[0][0]]).scores)
    frames = [Frame("top", i, 0.0, 0.0, img, lambda: None) for i, img in enumerate(images)]
    args = {"runner": padded, "preprocess": pre, "adapter": adapter, "max_batch": 4}
    shapes.clear()
    got = _collect(args, frames, len(frames))
    assert [got[i].scores for i in range(len(frames))] == expected
    assert set(shapes) == {4} and len(shapes) >= 3  # warm-up, then 11 views in at least 3 runs


def test_uint8_views_normalised_inside_the_model_match_numpys_preprocessing() -> None:
    """On a GPU the CPU only crops and resizes a view into uint8 and the model normalises it:
    the same numbers as the float path, ROI and resize included."""
    spec = PreprocessSpec((96, 128), (64, 64), (16, 8, 96, 80), (120.0, 110.0, 100.0), (50.0, 60.0, 70.0))
    pre = Preprocessor(spec)
    runner = OnnxRunner(MODEL, ("CPUExecutionProvider",), 1)
    assert not runner.prepare_uint8(spec.mean, spec.std)  # not on the CPU, unless forced
    assert runner.prepare_uint8(spec.mean, spec.std, force=True)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    f32 = np.empty((3, 3, 64, 64), dtype=np.float32)
    u8 = np.empty((3, 64, 64, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        pre(img, f32[i])
        pre.to_uint8(img, u8[i])
    rows, cols = 8 + np.arange(64) * 80 // 64, 16 + np.arange(64) * 96 // 64  # nearest neighbour in the ROI
    np.testing.assert_array_equal(u8[1], images[1][rows[:, None], cols[None, :]])
    np.testing.assert_allclose(runner.run_uint8(u8)[0], runner.run_all(f32)[0], atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        pre.to_uint8(images[0][:50], u8[0])


def test_on_a_gpu_the_running_thread_runs_once_before_the_first_view() -> None:
    """The CUDA provider sets up per-thread state at a thread's first run: the worker's own
    running thread pays for it at start, not the first part."""
    runner = OnnxRunner(MODEL, ("CPUExecutionProvider",), 1)
    runner.pad_to_batch = True  # as on a GPU provider
    seen: list[str] = []
    run = runner._run

    def spy(session: object, name: str, batch: np.ndarray) -> list[np.ndarray]:
        seen.append(threading.current_thread().name)
        return run(session, name, batch)

    w = InferenceWorker(
        runner, Preprocessor(PreprocessSpec((64, 64), (64, 64))), MultiLabelAdapter(DEFECTS, {}),
        lambda outcomes: None, max_batch=4, name="infer-7",
    )  # fmt: skip
    runner._run = spy  # type: ignore[method-assign]
    w.start()
    w.stop()
    assert seen == ["infer-7"]
