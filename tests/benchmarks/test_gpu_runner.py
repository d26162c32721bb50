"""Benchmarks on the CUDA provider (skipped without one): FP16 (converted at load) against FP32 at
the configured batch, and what a change of batch size costs a warm runner (cuDNN re-plans its
convolutions), which is why the worker pads every batch to one shape on a GPU. Prints figures and
writes .bench/gpu_runner.json; only asserts that the runs completed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.inference.runner import ModelLoadError, OnnxRunner, nvidia_device_present
from tests.benchmarks import mobilenet_like, resnet_like
from tests.benchmarks.test_inference_path import BATCH, MODEL, OUT

CUDA = ("CUDAExecutionProvider",)
pytestmark = pytest.mark.skipif(not nvidia_device_present(), reason="no NVIDIA GPU on this machine")


def _models() -> list[tuple[str, Path, int]]:
    return [
        ("demo", MODEL, 64),
        ("mobilenet-like", mobilenet_like.build(OUT / "mobilenet_like_w1.onnx", width=1.0), 224),
        ("resnet18-like", resnet_like.build(OUT / "resnet18_like.onnx"), 224),
    ]


def _cuda(path: Path, **kw: Any) -> OnnxRunner:
    try:
        runner = OnnxRunner(path, CUDA, **kw)
    except ModelLoadError as exc:
        pytest.skip(f"CUDA unusable here: {exc}")
    return runner


def _window(runner: OnnxRunner, batch: np.ndarray, seconds: float = 0.3) -> tuple[float, float]:
    """Images/s and median ms per batch over a short window."""
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        runner.run_all(batch)
        times.append(time.perf_counter() - t)
    return len(batch) * len(times) / sum(times), float(np.median(times)) * 1e3


def test_fp16_against_fp32_on_cuda() -> None:
    rows: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for label, path, size in _models():
        fp32, fp16 = _cuda(path), _cuda(path, fp16=True)
        assert fp16.fp16 and not fp32.fp16
        for b in sorted({1, BATCH}):
            batch = rng.normal(size=(b, 3, size, size)).astype(np.float32)
            fp32.warm_up(b)
            fp16.warm_up(b)
            got: dict[str, list[tuple[float, float]]] = {"fp32": [], "fp16": []}
            for _ in range(int(os.environ.get("BENCH_FP16_ROUNDS", "5"))):  # alternate: clocks drift
                got["fp32"].append(_window(fp32, batch))
                got["fp16"].append(_window(fp16, batch))
            med = {
                k: (float(np.median([v[0] for v in vs])), float(np.median([v[1] for v in vs])))
                for k, vs in got.items()
            }
            rows[f"{label} b{b}"] = {
                "fp32_images_per_s": round(med["fp32"][0], 1), "fp16_images_per_s": round(med["fp16"][0], 1),
                "fp32_ms": round(med["fp32"][1], 3), "fp16_ms": round(med["fp16"][1], 3),
                "speedup": round(med["fp16"][0] / med["fp32"][0], 2),
                "fp16_max_diff": fp16.fp16_max_diff,
            }  # fmt: skip
            r = rows[f"{label} b{b}"]
            print(
                f"\n{label} batch {b}: FP32 {r['fp32_images_per_s']:.0f} images/s ({r['fp32_ms']} ms), FP16 "
                f"{r['fp16_images_per_s']:.0f} ({r['fp16_ms']} ms): x{r['speedup']}; "
                f"max |FP16 - FP32| {r['fp16_max_diff']:.2g}",
                flush=True,
            )
    _save("fp16", rows)
    assert rows


def test_a_change_of_batch_size_on_a_warm_runner() -> None:
    """Why the worker pads on a GPU: every size run beforehand, then the same size again and again,
    against two sizes taking turns (as a worker with 4 cameras and a batch of 8 formed them)."""
    rows: dict[str, Any] = {}
    for label, path, size in _models()[1:]:
        runner = _cuda(path)
        x4 = np.zeros((4, 3, size, size), dtype=np.float32)
        x8 = np.zeros((8, 3, size, size), dtype=np.float32)
        for b in range(1, 9):
            runner.run_all(np.zeros((b, 3, size, size), dtype=np.float32))
        got: dict[str, float] = {}
        for name, seq in (
            ("b8 every run", [x8] * 12),
            ("b4 every run", [x4] * 12),
            ("b4, b8 in turn", [x4, x8] * 6),
        ):
            times = []
            for x in seq:
                t = time.perf_counter()
                runner.run_all(x)
                times.append(time.perf_counter() - t)
            got[name] = round(float(np.median(times[2:])) * 1e3, 2)
        rows[label] = got
        print(f"\n{label}, median ms per run after every size was run once: {got}", flush=True)
    _save("batch_size_changes", rows)
    assert rows


def _save(key: str, rows: dict[str, Any]) -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / "gpu_runner.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(old | {key: rows}, indent=2))
