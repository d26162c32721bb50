"""Benchmarks (make bench): raw onnxruntime against the controller's inference path (the demo,
MobileNet-class and ResNet-18-class models), and the controller's own per-frame cost. They print
figures and write .bench/inference.json; the only assertions are that the runs completed."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from controller.config import load_cell_config
from controller.core.encoder import EncoderHistory
from controller.core.matcher import Matcher
from controller.inference.adapters import MultiLabelAdapter
from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import DEFAULT_PROVIDERS, GPU_PROVIDERS, OnnxRunner
from controller.inference.worker import InferenceWorker, Outcome
from controller.interfaces import Frame
from simulators.parts import DEFECTS
from simulators.render import render
from tests.benchmarks import resnet_like
from tests.benchmarks.mobilenet_like import build

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "recipes/models/demo_defects.onnx"
OUT = ROOT / ".bench"
# The GPU providers first, as a cell config does: on a machine without an NVIDIA GPU this is the CPU.
#: "the configured batch": the demo cell's inference.max_batch.
BATCH = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml").inference.max_batch
PROVIDERS = tuple(os.environ.get("BENCH_PROVIDERS", ",".join(DEFAULT_PROVIDERS)).split(","))


def _frames(n: int, size: int) -> list[Frame]:
    """n camera frames of real rendered parts (a few distinct images, reused)."""
    imgs = [np.ascontiguousarray(np.resize(render(k, 0, ()), (size, size, 3))) for k in range(8)]
    return [Frame("top", i, 0.0, 0.0, imgs[i % 8], lambda: None) for i in range(n)]


def _raw(runner: OnnxRunner, batch: np.ndarray, n: int) -> tuple[float, float]:
    """Images/s and p99 ms of onnxruntime alone, fed ready batches."""
    lat = []
    t0 = time.perf_counter()
    for _ in range(n // len(batch)):
        t = time.perf_counter()
        runner.run_all(batch)
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    return len(lat) * len(batch) / total, float(np.percentile(lat, 99) * 1e3)


class _ControllerPath:
    """The controller's inference path, started once: submit → preprocess → batch → run → adapt → sink."""

    def __init__(self, runner: OnnxRunner, size: int, max_batch: int, n: int) -> None:
        self.n, self.frames = n, _frames(n, size)
        self.count, self.want, self.done = 0, n, threading.Event()
        pre = Preprocessor(PreprocessSpec((size, size), (size, size)))
        self.worker = InferenceWorker(
            runner, pre, MultiLabelAdapter(DEFECTS, {}), self._sink, max_batch, queue_size=n
        )
        self.worker.start()

    def _sink(self, outcomes: list[Outcome]) -> None:
        self.count += len(outcomes)
        if self.count >= self.want:
            self.done.set()

    def seconds(self, n: int) -> float:
        """Submit n frames at once and wait for their n results."""
        self.count, self.want = 0, n
        self.done.clear()
        t0 = time.perf_counter()
        for i in range(n):
            self.worker.submit(i, self.frames[i])
        assert self.done.wait(120)
        return time.perf_counter() - t0

    def images_per_s(self) -> float:
        return self.n / self.seconds(self.n)

    def p99_ms(self, batch: int, rounds: int = 100) -> float:
        """Latency of one batch of views submitted to an idle worker."""
        return float(np.percentile([self.seconds(batch) for _ in range(rounds)], 99) * 1e3)


def test_inference_throughput_and_controller_cost() -> None:
    # This machine's speed drifts by tens of percent from one second to the next: raw and
    # controller windows alternate, each short, and the median of the paired ratios is kept.
    rows: dict[str, dict[str, float]] = {}
    ratios: dict[str, dict[str, float]] = {}
    mobilenet = build(
        OUT / "mobilenet_like.onnx", width=float(os.environ.get("BENCH_MOBILENET_WIDTH", "0.6"))
    )
    resnet = resnet_like.build(
        OUT / "resnet18_like.onnx", width=float(os.environ.get("BENCH_RESNET_WIDTH", "1.0"))
    )
    cases = (
        ("demo", MODEL, 64, 400, 21),
        ("mobilenet-like", mobilenet, 224, 64, 7),
        ("resnet18-like", resnet, 224, 64, 5),
    )
    for label, path, size, n, rounds in cases:
        runner = OnnxRunner(path, PROVIDERS)
        runner.warm_up(BATCH)
        print(f"\n{label}: {runner.info.provider}")
        if runner.info.provider in GPU_PROVIDERS:
            n *= 4  # windows of a few ms on a GPU: longer ones steady the medians
        pre = Preprocessor(PreprocessSpec((size, size), (size, size)))
        for b in (1, BATCH):
            batch = np.empty((b, 3, size, size), dtype=np.float32)
            for i, f in enumerate(_frames(b, size)):
                pre(f.image, batch[i])
            runner.run_all(batch)
            path_ = _ControllerPath(runner, size, b, n)
            path_.images_per_s()
            raw, p99s, ctl = [], [], []
            for _ in range(rounds):
                tput, p99 = _raw(runner, batch, n)
                raw.append(tput)
                p99s.append(p99)
                ctl.append(path_.images_per_s())
            paired = np.array(ctl) / np.array(raw)
            rows[f"{label} raw b{b}"] = {"provider": runner.info.provider,
                "images_per_s": round(float(np.median(raw)), 1), "p99_ms": round(float(np.median(p99s)), 3)
            }  # fmt: skip
            rows[f"{label} controller b{b}"] = {
                "images_per_s": round(float(np.median(ctl)), 1), "p99_ms": round(path_.p99_ms(b), 3)
            }  # fmt: skip
            q1, med, q3 = np.percentile(paired, [25, 50, 75])
            path_.worker.stop()
            extra = float(np.median(1e6 / np.array(ctl) - 1e6 / np.array(raw)))
            ratios[f"{label} b{b}"] = {
                "median": round(float(med), 3), "q1": round(float(q1), 3), "q3": round(float(q3), 3),
                "added_us_per_image": round(extra, 1),
            }  # fmt: skip
    # The controller's own cost per frame: position lookup, matching, preprocessing, adapter.
    hist = EncoderHistory()
    for k in range(256):
        hist.add(k * 0.002, k * 20)
    matcher = Matcher(["top"], tolerance=100)
    pre = Preprocessor(PreprocessSpec((64, 64), (64, 64)))
    adapter = MultiLabelAdapter(DEFECTS, {})
    img = render(1, 0, ())
    slot = np.empty((3, 64, 64), dtype=np.float32)
    scores = np.full(len(DEFECTS), 0.1, dtype=np.float32)
    costs = []
    for i in range(2000):
        matcher.expect("top", 1000 + i * 500, i)
        t = time.perf_counter()
        hist.position_at(0.5)
        matcher.match("top", 1000 + i * 500)
        pre(img, slot)
        adapter("top", [scores])
        costs.append(time.perf_counter() - t)
    per_frame = {"p50_us": round(float(np.percentile(costs, 50)) * 1e6, 1),
                 "p99_us": round(float(np.percentile(costs, 99)) * 1e6, 1)}  # fmt: skip

    print("\n| path | images/s | p99 ms |\n|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v['images_per_s']} | {v.get('p99_ms', '-')} |")
    for k, r in ratios.items():
        print(
            f"controller path / raw, {k}: median {r['median']:.2f} (quartiles {r['q1']:.2f}-{r['q3']:.2f}),"
            f" {r['added_us_per_image']} µs added per image"
        )
    print(f"controller cost per frame (no model): p50 {per_frame['p50_us']} µs, p99 {per_frame['p99_us']} µs")
    OUT.mkdir(exist_ok=True)
    (OUT / "inference.json").write_text(
        json.dumps({"rows": rows, "ratios": ratios, "per_frame": per_frame}, indent=2)
    )
    assert all(v["images_per_s"] > 0 for v in rows.values())
