"""The inference worker: two named threads that preprocess, batch and run the views of one model.

Views are queued (bounded) as they are matched. The preparing thread (`<name>-prep`) writes each
one into the batch buffer being filled as soon as it is queued; the running thread (`<name>`)
takes whatever is filled, up to the batch size, the moment onnxruntime is free, and runs it
while the next views fill the other buffer. Nothing waits for a batch to fill, so a batch never
holds a part past its budget, and preprocessing overlaps the model instead of adding to it.
A full queue, a bad frame or a failed run becomes a failed view for the part, counted by cause.
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
    t_start: float = 0.0


#: One view's outcome: (part_id, result, t_start, t_end, frame); t_start is when its
#: preprocessing began, t_end when its result was made.
Outcome = tuple[int, ViewResult, float, float, Frame]
#: Receives the outcomes of one batch at a time, from a worker thread.
ResultSink = Callable[[list[Outcome]], None]


class InferenceWorker:
    """Owns one runner, two preallocated batch buffers and a bounded job queue."""

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
        self._buffers = (
            np.empty((max_batch, 3, ih, iw), dtype=np.float32),
            np.empty((max_batch, 3, ih, iw), dtype=np.float32),
        )
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        # Guards the buffer being filled: which one, the jobs in its slots, and whether a slot
        # is being written (the running thread waits for that write before taking the buffer).
        self._cond = threading.Condition()
        self._fill = 0
        self._filled: list[Job] = []
        self._writing = False
        self._closed = False
        self._prep = threading.Thread(target=self._prepare_loop, name=f"{name}-prep", daemon=True)
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self.batches = 0
        self.views = 0

    def start(self) -> None:
        self._prep.start()
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Both threads run (a thread that died would leave every view undecided)."""
        return self._prep.is_alive() and self._thread.is_alive()

    def stop(self) -> None:
        """Finish the views already queued, then end both threads."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._prep.join(timeout=5.0)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def submit(self, part_id: int, frame: Frame) -> bool:
        """Queue a view; False (and a failed view reported) if the queue is full."""
        try:
            self._queue.put_nowait(Job(part_id, frame))
            return True
        except queue.Full:
            now = time.monotonic()
            res = ViewResult(frame.camera, ViewStatus.FAILED, cause=ReasonCode.OVERLOAD)
            self.sink([(part_id, res, now, now, frame)])
            return False

    def _prepare_loop(self) -> None:
        cond = self._cond
        while (job := self._queue.get()) is not None:
            with cond:
                while len(self._filled) >= self.max_batch:
                    cond.wait()
                slot = self._buffers[self._fill][len(self._filled)]
                self._writing = True
            job.t_start = time.monotonic()
            try:
                self.preprocess(job.frame.image, slot)
                bad = None
            except ValueError as exc:
                bad = exc
            with cond:
                self._writing = False
                if bad is None:
                    self._filled.append(job)
                cond.notify_all()
            if bad is not None:
                log.warning("camera %s frame %d: %s", job.frame.camera, job.frame.counter, bad)
                res = ViewResult(job.frame.camera, ViewStatus.FAILED, cause=ReasonCode.BAD_FRAME)
                self.sink([(job.part_id, res, job.t_start, time.monotonic(), job.frame)])

    def _run_loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while self._writing or not (self._filled or self._closed):
                    cond.wait()
                if not self._filled:
                    return
                jobs, batch = self._filled, self._buffers[self._fill][: len(self._filled)]
                self._filled, self._fill = [], self._fill ^ 1
                cond.notify_all()
            self.sink(self._infer(jobs, batch))

    def _infer(self, jobs: list[Job], batch: np.ndarray) -> list[Outcome]:
        try:
            outputs = self.runner.run_all(batch)
            results = [self.adapter(j.frame.camera, [out[k] for out in outputs]) for k, j in enumerate(jobs)]
        except Exception as exc:  # any runtime failure is a failed view, never a lost part
            log.error("inference failed for %d views: %s", len(jobs), exc)
            results = [
                ViewResult(j.frame.camera, ViewStatus.FAILED, cause=ReasonCode.INFERENCE_FAILED) for j in jobs
            ]
        t1 = time.monotonic()
        self.batches += 1
        self.views += len(jobs)
        return [(j.part_id, r, j.t_start, t1, j.frame) for j, r in zip(jobs, results, strict=True)]
