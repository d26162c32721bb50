"""The GPU paths (skipped on a machine without an NVIDIA GPU): CUDA and TensorRT through the runner.

    .venv/bin/python -m pytest tests/gpu -s

They check what the CPU cannot: the provider really in use, outputs that match the CPU's,
IOBinding on the device, FP16 within tolerance, and one TensorRT engine for every batch size
(no rebuild when the worker forms a batch size it has not run before).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.inference.runner import GpuOptions, ModelLoadError, OnnxRunner, nvidia_device_present

MODEL = Path(__file__).resolve().parents[2] / "recipes/models/demo_defects.onnx"
pytestmark = pytest.mark.skipif(not nvidia_device_present(), reason="no NVIDIA GPU on this machine")


def _runner(provider: str, gpu: GpuOptions | None = None) -> OnnxRunner:
    try:
        runner = OnnxRunner(MODEL, (provider,), gpu=gpu)
    except ModelLoadError as exc:
        pytest.skip(f"{provider} unusable here: {exc}")
    assert runner.info.provider == provider
    return runner


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 3, 64, 64)).astype(np.float32)


def test_cuda_uses_io_binding_and_matches_the_cpu() -> None:
    cuda = _runner("CUDAExecutionProvider")
    cpu = OnnxRunner(MODEL, ("CPUExecutionProvider",))
    assert cuda.io_binding and not cpu.io_binding
    assert cuda.pad_to_batch and not cpu.pad_to_batch
    x = _batch(8)
    (got,), (want,) = cuda.run_all(x), cpu.run_all(x)
    np.testing.assert_allclose(got, want, atol=1e-4)


def _engines(cache: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in cache.glob("*.engine")}


def test_tensorrt_builds_one_engine_for_every_batch_size(tmp_path: Path) -> None:
    """onnxruntime rewrites a subgraph's cached engine when a shape falls outside its profile:
    after warm-up, no batch size up to max_batch may touch the cache again."""
    cache = tmp_path / "trt"
    trt = _runner("TensorrtExecutionProvider", GpuOptions(trt_cache=cache, max_batch=8))
    trt.warm_up(8)
    built = _engines(cache)
    assert built, "no engine written to the cache"
    cpu = OnnxRunner(MODEL, ("CPUExecutionProvider",))
    for n in (3, 5, 8, 1, 7):
        np.testing.assert_allclose(trt.run_all(_batch(n))[0], cpu.run_all(_batch(n))[0], atol=1e-3)
    assert _engines(cache) == built


def test_tensorrt_fp16_stays_within_tolerance(tmp_path: Path) -> None:
    trt = _runner("TensorrtExecutionProvider", GpuOptions(fp16=True, trt_cache=tmp_path, max_batch=4))
    cpu = OnnxRunner(MODEL, ("CPUExecutionProvider",))
    x = _batch(4)
    np.testing.assert_allclose(trt.run_all(x)[0], cpu.run_all(x)[0], atol=2e-2)


def test_cuda_fp16_is_converted_at_load_and_stays_within_tolerance() -> None:
    """Without TensorRT, `inference.fp16` on CUDA converts the model (float32 IO kept) and checks it."""
    half = _runner("CUDAExecutionProvider", GpuOptions(fp16=True))
    cpu = OnnxRunner(MODEL, ("CPUExecutionProvider",))
    assert half.fp16 and half.fp16_max_diff is not None and half.fp16_max_diff <= 0.02
    x = _batch(8)
    (got,), (want,) = half.run_all(x), cpu.run_all(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-2)
    # The worker's uint8 session (normalisation inside the model) on top of the FP16 model.
    assert half.prepare_uint8((127.5,) * 3, (64.0,) * 3)
    u8 = np.clip(x * 64.0 + 127.5, 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
    (got8,), (want8,) = (
        half.run_uint8(u8),
        cpu.run_all(((u8.transpose(0, 3, 1, 2) - 127.5) / 64.0).astype(np.float32)),
    )
    np.testing.assert_allclose(got8, want8, atol=2e-2)
    with pytest.raises(ModelLoadError, match="FP16 refused"):
        OnnxRunner(MODEL, ("CUDAExecutionProvider",), gpu=GpuOptions(fp16=True), fp16_tolerance=1e-7)


def test_the_worker_on_cuda_keeps_each_result_with_its_view() -> None:
    import threading

    from controller.inference.adapters import MultiLabelAdapter
    from controller.inference.preprocess import Preprocessor, PreprocessSpec
    from controller.inference.worker import InferenceWorker, Outcome
    from controller.interfaces import Frame
    from simulators.parts import DEFECTS
    from simulators.render import render

    cuda = _runner("CUDAExecutionProvider")
    cpu = OnnxRunner(MODEL, ("CPUExecutionProvider",))
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    images = [render(500 + i, 0, (DEFECTS[i % len(DEFECTS)],) if i % 2 else ()) for i in range(64)]
    slot = np.empty((1, 3, 64, 64), dtype=np.float32)
    want = []
    for img in images:
        pre(img, slot[0])
        want.append(cpu.run_all(slot)[0][0])
    got: dict[int, tuple[float, ...]] = {}
    done = threading.Event()

    def sink(outcomes: list[Outcome]) -> None:
        got.update((pid, res.scores) for pid, res, *_ in outcomes)
        if len(got) == len(images):
            done.set()

    w = InferenceWorker(cuda, pre, MultiLabelAdapter(DEFECTS, {}), sink, max_batch=8, queue_size=64)
    w.start()
    for i, img in enumerate(images):
        assert w.submit(i, Frame(f"cam{i % 4}", i, 0.0, 0.0, img, lambda: None))
    assert done.wait(30.0)
    w.stop()
    np.testing.assert_allclose(np.array([got[i] for i in range(len(images))]), np.array(want), atol=2e-3)
