"""Is a slow onnxruntime run the model's, the GPU's or the host's? (`python -m tests.benchmarks.stall_probe`)

Raw onnxruntime runs a ResNet-18-class model at batch 8 every 10 ms for 8 s on the first provider
of BENCH_PROVIDERS (default CUDA, then CPU) while a second thread times a small numpy job every
2 ms. It prints the slow runs and the host's slow moments with their times: when both sit at the
same instants the machine stalled (a shared or throttled host), not the model or the worker. Not a
test; used on the lent GPU machine, where such stalls set the streaming benchmark's p99.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import onnxruntime as ort

from tests.benchmarks import resnet_like
from tests.benchmarks.test_inference_path import OUT

SECONDS = 8.0


def _sleep_until(t: float) -> None:
    while (left := t - time.perf_counter()) > 0:
        time.sleep(left)


def host_probe(out: list[tuple[float, float, float]], t0: float) -> None:
    """(time, job duration, wake-up lateness) of a 200×200 matmul every 2 ms."""
    a = np.random.default_rng(0).random((200, 200))
    k = 0
    while time.perf_counter() - t0 < SECONDS:
        due = t0 + k * 0.002
        k += 1
        _sleep_until(due)
        t = time.perf_counter()
        a @ a
        out.append((t - t0, time.perf_counter() - t, t - due))


def main() -> None:
    path = resnet_like.build(OUT / "resnet18_like.onnx", width=1.0)
    providers = os.environ.get("BENCH_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider").split(",")
    session = ort.InferenceSession(str(path), providers=providers)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(1).random((8, 3, 224, 224), dtype=np.float32)
    for _ in range(20):
        session.run(None, {name: x})
    host: list[tuple[float, float, float]] = []
    t0 = time.perf_counter() + 0.01
    probe = threading.Thread(target=host_probe, args=(host, t0))
    probe.start()
    runs = []
    for k in range(int(SECONDS * 100)):
        _sleep_until(t0 + k * 0.01)
        t = time.perf_counter()
        session.run(None, {name: x})
        runs.append((t - t0, time.perf_counter() - t))
    probe.join()
    d = np.array([r[1] for r in runs]) * 1e3
    p50, p99 = np.percentile(d, [50, 99])
    print(f"{session.get_providers()[0]}: runs p50 {p50:.2f} p99 {p99:.2f} max {d.max():.2f} ms")
    print("slow runs (> 4 ms) at s:", [(round(a, 3), round(b * 1e3, 1)) for a, b in runs if b > 0.004])
    job = np.array([h[1] for h in host]) * 1e3
    late = np.array([h[2] for h in host]) * 1e3
    lp99 = np.percentile(late, 99)
    print(f"host job p50 {np.median(job):.3f} max {job.max():.2f} ms;", end=" ")
    print(f"wake-up late p99 {lp99:.2f} max {late.max():.2f} ms")

    slow = [(round(a, 3), round(b * 1e3, 1), round(c * 1e3, 1)) for a, b, c in host if b > 0.003 or c > 0.003]
    print("host slow (job or wake-up > 3 ms) at s:", slow[:40])


if __name__ == "__main__":
    main()
