"""The inference worker: a named thread that batches queued views of one model and runs them.

Views are queued (bounded) as they are matched; the worker takes whatever is waiting, up to
the batch size, without waiting for more, so a batch never holds a part past its budget. A
full queue or a failed run becomes a failed view for the part, counted by cause.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from controller.core.types import ReasonCode, ViewResult, ViewStatus
from controller.inference.adapters import Adapter
from controller.inference.preprocess import Preprocessor
from controller.inference.runner import OnnxRunner
from controller.interfaces import Frame

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    part_id: int
    frame: Frame


#: (part_id, result, t_start, t_end, frame) back to the control loop.
ResultSink = Callable[[int, ViewResult, float, float, Frame], None]


class InferenceWorker:
    """Owns one runner, one preallocated batch buffer and a bounded job queue."""

    def __init__(
        self,
        runner: OnnxRunner,
        preprocess: Preprocessor,
        adapter: Adapter,
        sink: ResultSink,
        max_batch: int = 8,
        queue_size: int = 64,
        name: str = "infer-0",
    ) -> None:
        self.runner, self.preprocess, self.adapter, self.sink = runner, preprocess, adapter, sink
        self.max_batch = max_batch
        ih, iw = preprocess.spec.input_hw
        self._batch = np.empty((max_batch, 3, ih, iw), dtype=np.float32)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.batches = 0
        self.views = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The worker thread runs (a thread that died would leave every view undecided)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._thread.join(timeout=5.0)

    def submit(self, part_id: int, frame: Frame) -> bool:
        """Queue a view; False (and a failed view reported) if the queue is full."""
        try:
            self._queue.put_nowait(Job(part_id, frame))
            return True
        except queue.Full:
            now = time.monotonic()
            res = ViewResult(frame.camera, ViewStatus.FAILED, cause=ReasonCode.OVERLOAD)
            self.sink(part_id, res, now, now, frame)
            return False

    def _run(self) -> None:
        jobs: list[Job] = []
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs.append(job)
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._process(jobs)
                    return
                jobs.append(nxt)
            self._process(jobs)
            jobs.clear()

    def _process(self, jobs: list[Job]) -> None:
        t0 = time.monotonic()
        ok: list[int] = []
        results: dict[int, ViewResult] = {}
        for i, job in enumerate(jobs):
            try:
                self.preprocess(job.frame.image, self._batch[len(ok)])
                ok.append(i)
            except ValueError as exc:
                log.warning("camera %s frame %d: %s", job.frame.camera, job.frame.counter, exc)
                results[i] = ViewResult(job.frame.camera, ViewStatus.FAILED, cause=ReasonCode.BAD_FRAME)
        if ok:
            try:
                outputs = self.runner.run_all(self._batch[: len(ok)])
                for k, i in enumerate(ok):
                    results[i] = self.adapter(jobs[i].frame.camera, [out[k] for out in outputs])
            except Exception as exc:  # any runtime failure is a failed view, never a lost part
                log.error("inference failed for %d views: %s", len(ok), exc)
                for i in ok:
                    results[i] = ViewResult(
                        jobs[i].frame.camera, ViewStatus.FAILED, cause=ReasonCode.INFERENCE_FAILED
                    )
        t1 = time.monotonic()
        self.batches += 1
        self.views += len(jobs)
        for i, job in enumerate(jobs):
            self.sink(job.part_id, results[i], t0, t1, job.frame)
