"""A steady stream of parts through the inference worker, as a line delivers them, and the same
groups through raw onnxruntime: per-view latency from submit to result, batch sizes, and where
the worker's time goes. Used by test_streaming.py (make bench) and by the GPU script.

Parts arrive at a fixed rate; each brings one view per camera, submitted together (cameras at
one station fire together; the matcher hands their frames over within microseconds). The
submitting thread sleeps between parts and never spins, so it does not hold the GIL that the
worker's threads need, as the service's asyncio loop does not either while it waits.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.core.types import ViewResult
from controller.inference.adapters import MultiLabelAdapter, adapt_all
from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import OnnxRunner
from controller.inference.worker import InferenceWorker, Outcome
from controller.interfaces import Frame
from simulators.parts import DEFECTS
from simulators.render import render


def frames(n: int, size: int) -> list[Frame]:
    """n camera frames of real rendered parts (a few distinct images, reused)."""
    imgs = [np.ascontiguousarray(np.resize(render(k, 0, ()), (size, size, 3))) for k in range(8)]
    return [Frame(f"cam{i % 8}", i, 0.0, 0.0, imgs[i % 8], lambda: None) for i in range(n)]


def _sleep_until(t: float) -> None:
    while (left := t - time.perf_counter()) > 0:
        time.sleep(left)


def pct(xs: np.ndarray | Sequence[float]) -> dict[str, float]:
    """p50, p99 and max in ms of latencies in seconds."""
    a = np.asarray(xs, dtype=np.float64) * 1e3
    if a.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    p50, p99 = np.percentile(a, [50, 99])
    return {
        "p50_ms": round(float(p50), 3),
        "p99_ms": round(float(p99), 3),
        "max_ms": round(float(a.max()), 3),
    }


def raw_stream(runner: OnnxRunner, size: int, cams: int, rate: float, parts: int) -> dict[str, Any]:
    """onnxruntime alone on the same groups at the same rate: each part's views, preprocessed
    beforehand into a ready batch, run at once; the latency of that run is each view's."""
    pre = Preprocessor(PreprocessSpec((size, size), (size, size)))
    batch = np.empty((cams, 3, size, size), dtype=np.float32)
    for i, f in enumerate(frames(cams, size)):
        pre(f.image, batch[i])
    runner.run_all(batch)
    lat = np.empty(parts)
    t0 = time.perf_counter() + 0.01
    late = 0
    for k in range(parts):
        due = t0 + k / rate
        _sleep_until(due)
        t = time.perf_counter()
        late += t - due > 1.0 / rate
        runner.run_all(batch)
        lat[k] = time.perf_counter() - t
    return pct(lat) | {"behind": int(late)}


@dataclass
class _Probe:
    """Timestamps of one stream run, in preallocated arrays indexed by view or by batch."""

    n: int
    submit: np.ndarray = field(init=False)
    result: np.ndarray = field(init=False)
    prep_start: np.ndarray = field(init=False)
    batch_sizes: list[int] = field(default_factory=list)
    run_s: list[float] = field(default_factory=list)
    adapt_s: list[float] = field(default_factory=list)
    sink_s: list[float] = field(default_factory=list)
    failed: int = 0

    def __post_init__(self) -> None:
        self.submit = np.full(self.n, np.nan)
        self.result = np.full(self.n, np.nan)
        self.prep_start = np.full(self.n, np.nan)


class _TimedRunner:
    """The runner with its run timed (the worker sees the same interface)."""

    def __init__(self, runner: OnnxRunner, probe: _Probe) -> None:
        self.runner, self.probe, self.info = runner, probe, runner.info
        self.pad_to_batch = runner.pad_to_batch

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        t = time.perf_counter()
        out = self.runner.run_all(batch)
        self.probe.run_s.append(time.perf_counter() - t)
        return out

    def run_uint8(self, batch: np.ndarray) -> list[np.ndarray]:
        t = time.perf_counter()
        out = self.runner.run_uint8(batch)
        self.probe.run_s.append(time.perf_counter() - t)
        return out

    def prepare_uint8(self, mean: Sequence[float], std: Sequence[float]) -> bool:
        return self.runner.prepare_uint8(mean, std)

    def warm_up(self, max_batch: int) -> None:
        self.runner.warm_up(max_batch)


class _TimedAdapter:
    """The adapter with each batch's adaptation timed (per view)."""

    def __init__(self, adapter: MultiLabelAdapter, probe: _Probe) -> None:
        self.adapter, self.probe = adapter, probe

    def __call__(self, camera: str, outputs: Sequence[np.ndarray]) -> ViewResult:
        return self.adapter(camera, outputs)

    def batch(self, cameras: Sequence[str], outputs: Sequence[np.ndarray]) -> list[ViewResult]:
        t = time.perf_counter()
        got = adapt_all(self.adapter, cameras, outputs)
        self.probe.adapt_s.append((time.perf_counter() - t) / max(1, len(cameras)))
        return got


def worker_stream(
    runner: OnnxRunner, size: int, cams: int, rate: float, parts: int, max_batch: int, probe_stages: bool
) -> dict[str, Any]:
    """The worker as the cell drives it: `cams` views per part submitted together, `rate` parts/s."""
    n = parts * cams
    probe = _Probe(n)
    done = threading.Event()
    count = [0]
    monotonic_offset = time.perf_counter() - time.monotonic()

    def sink(outcomes: list[Outcome]) -> None:
        t = time.perf_counter()
        for pid, res, t_start, _t_end, _frame in outcomes:
            probe.result[pid] = t
            probe.prep_start[pid] = t_start + monotonic_offset
            probe.failed += res.cause is not None and res.status.name == "FAILED"
        probe.batch_sizes.append(len(outcomes))
        count[0] += len(outcomes)
        if count[0] >= n:
            done.set()
        probe.sink_s.append(time.perf_counter() - t)

    pre = Preprocessor(PreprocessSpec((size, size), (size, size)))
    adapter: Any = MultiLabelAdapter(DEFECTS, {})
    run: Any = runner
    if probe_stages:
        adapter, run = _TimedAdapter(adapter, probe), _TimedRunner(runner, probe)
    worker = InferenceWorker(run, pre, adapter, sink, max_batch, queue_size=max(64, 4 * cams))
    gc_pauses: list[float] = []
    gc_start = [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_start[0])

    if probe_stages:
        gc.callbacks.append(on_gc)
    worker.start()
    fr = frames(max(cams, 8), size)
    t0 = time.perf_counter() + 0.01
    behind = 0
    for k in range(parts):
        due = t0 + k / rate
        _sleep_until(due)
        t = time.perf_counter()
        behind += t - due > 1.0 / rate
        for c in range(cams):
            v = k * cams + c
            probe.submit[v] = time.perf_counter()
            worker.submit(v, fr[c])
    ok = done.wait(60.0)
    worker.stop()
    if probe_stages:
        gc.callbacks.remove(on_gc)
    lat = probe.result - probe.submit
    sizes = [s for s in probe.batch_sizes if s]
    row: dict[str, Any] = pct(lat[np.isfinite(lat)]) | {
        "mean_batch": round(float(np.mean(sizes)), 2) if sizes else 0.0,
        # The first part meets a worker just started: shown apart, to tell start-up from the stream.
        "first_part_max_ms": round(float(np.nanmax(lat[:cams])) * 1e3, 3)
        if np.isfinite(lat[:cams]).any()
        else None,
        "p99_after_first_part_ms": pct(lat[cams:][np.isfinite(lat[cams:])])["p99_ms"],
        "failed": int(probe.failed) + int(np.isnan(lat).sum()),
        "complete": ok,
        "behind": behind,
    }
    if probe_stages:
        queue_wait = probe.prep_start - probe.submit
        row["stages_us"] = {
            "queue_p50": round(float(np.nanmedian(queue_wait)) * 1e6, 1),
            "run_p50": round(float(np.median(probe.run_s)) * 1e6, 1) if probe.run_s else None,
            "adapter_p50_per_view": round(float(np.median(probe.adapt_s)) * 1e6, 2)
            if probe.adapt_s
            else None,
            "sink_p50": round(float(np.median(probe.sink_s)) * 1e6, 1),
            # Where a stall was: the slowest single run and sink, and the slowest view split
            # into its wait for a preparing thread and the rest (prepare, run, adapt, sink).
            "queue_max": round(float(np.nanmax(queue_wait)) * 1e6, 1),
            "run_max": round(float(np.max(probe.run_s)) * 1e6, 1) if probe.run_s else None,
            "sink_max": round(float(np.max(probe.sink_s)) * 1e6, 1),
            "gc_pauses": len(gc_pauses),
            "gc_max": round(max(gc_pauses, default=0.0) * 1e6, 1),
        }
        if np.isfinite(lat).any():
            worst = int(np.nanargmax(lat))
            row["stages_us"]["worst_view_queue"] = round(float(queue_wait[worst]) * 1e6, 1)
            row["stages_us"]["worst_view_after_start"] = round(
                float(probe.result[worst] - probe.prep_start[worst]) * 1e6, 1
            )
    return row
