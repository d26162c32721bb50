"""The inference worker: named threads that preprocess, batch and run the views of one model.

Views are queued (bounded) as they are matched. Preparing threads (`<name>-prep-K`) each take a
view and write it into a reserved slot of the batch buffer being filled; the running thread
(`<name>`) takes that buffer once every view that has arrived is in it (or it is full), runs it,
and meanwhile the next views fill the other buffer. A batch never waits for views that have not
arrived, and the views of one part, submitted together, run together in one call. On a GPU every
run has one shape, the full batch with its unused slots padded (`OnnxRunner.pad_to_batch`: cuDNN
re-plans its convolutions whenever the batch size changes, which costs far more than the padding).
On a GPU, too, views go over as uint8 HWC and the model normalises them (`OnnxRunner.prepare_uint8`):
the CPU copies a view instead of converting it, a quarter of the bytes cross to the device, and the
preparing threads hold the GIL the running thread needs for far less time. Preprocessing overlaps
the model. One lock guards the queue, the slots and the counts (one hand-off per view, not two).
A full queue, a bad frame or a failed run becomes a failed view for the part, counted by cause.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from controller.core.types import ReasonCode, ViewResult, ViewStatus
from controller.inference.adapters import Adapter, adapt_all
from controller.inference.preprocess import Preprocessor
from controller.inference.runner import GPU_PROVIDERS, OnnxRunner
from controller.interfaces import Frame

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    part_id: int
    frame: Frame
    t_start: float = 0.0
    bad: bool = False


#: One view's outcome: (part_id, result, t_start, t_end, frame); t_start is when its
#: preprocessing began, t_end when its result was made.
Outcome = tuple[int, ViewResult, float, float, Frame]
#: Receives the outcomes of one batch at a time, from a worker thread.
ResultSink = Callable[[list[Outcome]], None]


def default_prep_threads(provider: str) -> int:
    """On the CPU the cores belong to onnxruntime's own threads: one preparing thread. On a GPU a
    view is only copied (the model normalises it): two, so one view's copy overlaps the next's
    hand-off; more would only contend for the GIL with the running thread."""
    if provider not in GPU_PROVIDERS:
        return 1
    return 2 if (os.cpu_count() or 1) >= 4 else 1


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
        prep_threads: int | None = None,
    ) -> None:
        """Blocking (seconds on a GPU): it may build the runner's uint8 session and warms it.
        `prep_threads`: preparing threads (default: `default_prep_threads` of the provider)."""
        self.runner, self.preprocess, self.adapter, self.sink = runner, preprocess, adapter, sink
        self.max_batch, self.queue_size = max_batch, queue_size
        ih, iw = preprocess.spec.input_hw
        self._pad = bool(getattr(runner, "pad_to_batch", False))
        # On a GPU the views go over as uint8 HWC and the model normalises them (a session build).
        self._u8 = self._pad and runner.prepare_uint8(preprocess.spec.mean, preprocess.spec.std)
        shape, dtype = ((ih, iw, 3), np.uint8) if self._u8 else ((3, ih, iw), np.float32)
        self._write = preprocess.to_uint8 if self._u8 else preprocess
        self._run_batch = runner.run_uint8 if self._u8 else runner.run_all
        # Zeros, not garbage: a padded batch (GPU, `runner.pad_to_batch`) runs its unused slots too.
        self._buffers = (
            np.zeros((max_batch, *shape), dtype=dtype),
            np.zeros((max_batch, *shape), dtype=dtype),
        )
        # Every shape this worker runs, warmed here (blocking, like the load; a no-op if done), so
        # `start` is quick on the control loop and no part pays for cuDNN's first-use search.
        runner.warm_up(max_batch)
        lock = threading.Lock()
        # Preparing threads wait here for a view and a free slot; the running thread for a batch.
        self._prep_cv = threading.Condition(lock)
        self._run_cv = threading.Condition(lock)
        self._jobs: deque[Job] = deque()
        self._fill = 0  # the buffer being filled
        self._slots: list[Job] = []  # views reserved in it, in slot order
        self._writing = 0  # slots of it being written
        self._waiting_for_space = 0  # preparing threads holding off until a buffer is free
        self._stopping = False  # no more views: preparing threads end once the queue is empty
        self._closed = False  # preparing threads ended: the running thread ends once idle
        n = prep_threads or default_prep_threads(runner.info.provider)
        self._preps = [
            threading.Thread(target=self._prepare_loop, name=f"{name}-prep-{k}", daemon=True)
            for k in range(n)
        ]
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self.batches = 0
        self.views = 0

    def start(self) -> None:
        """Start the threads (quick: the loading and warming were done at construction)."""
        for t in self._preps:
            t.start()
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Every thread runs (a thread that died would leave views undecided)."""
        return self._thread.is_alive() and all(t.is_alive() for t in self._preps)

    def stop(self) -> None:
        """Finish the views already queued, then end every thread."""
        with self._prep_cv:
            self._stopping = True
            self._prep_cv.notify_all()
        for t in self._preps:
            if t.ident is not None:
                t.join(timeout=5.0)
        with self._run_cv:
            self._closed = True
            self._run_cv.notify()
        if self._thread.ident is not None:
            self._thread.join(timeout=5.0)

    def submit(self, part_id: int, frame: Frame) -> bool:
        """Queue a view; False (and a failed view reported) if the queue is full."""
        with self._prep_cv:
            if len(self._jobs) < self.queue_size and not self._stopping:
                self._jobs.append(Job(part_id, frame))
                self._prep_cv.notify()
                return True
        now = time.monotonic()
        res = ViewResult(frame.camera, ViewStatus.FAILED, cause=ReasonCode.OVERLOAD)
        self.sink([(part_id, res, now, now, frame)])
        return False

    def _batch_ready(self) -> bool:
        """Caller holds the lock: every arrived view is written in, or the buffer is full."""
        slots = len(self._slots)
        return self._writing == 0 and (slots == self.max_batch or (slots > 0 and not self._jobs))

    def _prepare_loop(self) -> None:
        cv, buffers, jobs = self._prep_cv, self._buffers, self._jobs
        while True:
            with cv:
                while not (jobs and len(self._slots) < self.max_batch):
                    if self._stopping and not jobs:
                        return
                    full = bool(jobs)  # a view waits, the buffer is full: wait for the next one
                    self._waiting_for_space += full
                    cv.wait()
                    self._waiting_for_space -= full
                job = jobs.popleft()
                slots = self._slots
                slot = buffers[self._fill][len(slots)]
                slots.append(job)
                self._writing += 1
            job.t_start = time.monotonic()
            try:
                self._write(job.frame.image, slot)
                bad = None
            except ValueError as exc:  # the slot runs with the batch (zeros); its result is dropped
                job.bad, bad = True, exc
                slot.fill(0.0)
            with cv:
                self._writing -= 1
                if self._batch_ready():
                    self._run_cv.notify()
            if bad is not None:
                log.warning("camera %s frame %d: %s", job.frame.camera, job.frame.counter, bad)
                res = ViewResult(job.frame.camera, ViewStatus.FAILED, cause=ReasonCode.BAD_FRAME)
                self.sink([(job.part_id, res, job.t_start, time.monotonic(), job.frame)])

    def _run_loop(self) -> None:
        cv = self._run_cv
        if self._pad:
            # onnxruntime's CUDA provider sets up cuDNN and cuBLAS for each thread that runs a
            # session, at its first run: here, not with the first part. Buffer 1 is not filled yet.
            try:
                self._run_batch(self._buffers[1])
            except Exception as exc:  # the first real batch will fail and report it per view
                log.error("warm run on %s failed: %s", threading.current_thread().name, exc)
        while True:
            with cv:
                while not self._batch_ready():
                    if self._closed and not self._slots:
                        return
                    cv.wait()
                jobs, batch = self._slots, self._buffers[self._fill]
                if not self._pad:
                    batch = batch[: len(jobs)]
                self._slots, self._fill = [], self._fill ^ 1
                if self._waiting_for_space:  # only those: idle ones would wake for nothing
                    self._prep_cv.notify(self._waiting_for_space)
            outcomes = self._infer(jobs, batch)
            if outcomes:
                self.sink(outcomes)

    def _infer(self, jobs: list[Job], batch: np.ndarray) -> list[Outcome]:
        try:
            outputs = self._run_batch(batch)
            if len(batch) > len(jobs):  # padded: the unused slots' rows are dropped (views, no copy)
                outputs = [out[: len(jobs)] for out in outputs]
            results = adapt_all(self.adapter, [j.frame.camera for j in jobs], outputs)
        except Exception as exc:  # any runtime failure is a failed view, never a lost part
            log.error("inference failed for %d views: %s", len(jobs), exc)
            results = [
                ViewResult(j.frame.camera, ViewStatus.FAILED, cause=ReasonCode.INFERENCE_FAILED) for j in jobs
            ]
        t1 = time.monotonic()
        self.batches += 1
        self.views += len(jobs)
        return [
            (j.part_id, r, j.t_start, t1, j.frame) for j, r in zip(jobs, results, strict=True) if not j.bad
        ]
