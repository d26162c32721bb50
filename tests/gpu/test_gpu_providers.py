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
