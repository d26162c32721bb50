"""The image keeper: every camera frame buffer from its arrival to its release, and the images
kept for the parts' records.

A frame's buffer belongs to its camera driver until released. The keeper takes each frame as
it arrives and names it by a token (a running number), which is all the core ever sees of it;
the core's actions say what becomes of it: Infer (the keeper lends the frame to an inference
worker and keeps owning it), DropFrame (released now). A view's frame is held after its result
until the part's verdict; then copies of the images the recipe's policy asks for are kept
(every view of a rejected part; every n-th passed part) and the buffers released. Whatever is
left at shutdown is released then. Every buffer is released exactly once. Runs on the event
loop only.
"""

from __future__ import annotations

import itertools

import numpy as np

from controller.config import ImagePolicy
from controller.contract import Verdict
from controller.interfaces import Frame


class ImageKeeper:
    """Frames by token from arrival to release; frames by part until decided; the images kept
    for records by part."""

    def __init__(self) -> None:
        self._frames: dict[int, Frame] = {}  # every buffer not released yet, by token
        # A frame object is unique while its buffer is held here: results come back with it.
        self._token_of: dict[int, int] = {}  # id(frame) → token
        self._held: dict[int, dict[str, int]] = {}  # part → camera → token, until decided
        self._lent: set[int] = set()  # tokens in an inference worker: their results not back yet
        self._images: dict[int, dict[str, np.ndarray]] = {}
        self._passed_seen = 0
        self._tokens = itertools.count(1)
        #: Buffers released so far (each exactly once).
        self.released = 0

    def arrive(self, frame: Frame) -> int:
        """A frame from a camera: held here from now on; returns its token for the core."""
        token = next(self._tokens)
        self._frames[token] = frame
        self._token_of[id(frame)] = token
        return token

    def frame(self, token: int) -> Frame | None:
        """The frame of `token` (still held here); None if it was released."""
        return self._frames.get(token)

    def lend(self, token: int) -> Frame | None:
        """The frame to infer on, marked as in a worker until its result comes back (`hold`,
        `release_frame`); None if it was released."""
        frame = self._frames.get(token)
        if frame is not None:
            self._lent.add(token)
        return frame

    def hold(self, part_id: int, frame: Frame) -> bool:
        """A view's result came for an undecided part: keep its frame until the verdict.
        False if the frame is not held here any more (released at shutdown)."""
        token = self._token_of.get(id(frame))
        if token is None:
            return False
        self._lent.discard(token)
        views = self._held.setdefault(part_id, {})
        previous = views.get(frame.camera)
        views[frame.camera] = token
        if previous is not None and previous != token:
            self.release(previous)  # a second result for one view: the first frame is done with
        return True

    def release(self, token: int) -> None:
        """Release frame `token` (a DropFrame, a late result); nothing if already released."""
        frame = self._frames.pop(token, None)
        if frame is None:
            return
        self._lent.discard(token)
        del self._token_of[id(frame)]
        self.released += 1
        frame.release()

    def release_frame(self, frame: Frame) -> None:
        """A result no part wants (late): its frame released, unless it already was."""
        token = self._token_of.get(id(frame))
        if token is not None:
            self.release(token)

    @staticmethod
    def turn_away(frame: Frame) -> None:
        """A frame that arrives while the cell is not running: released at once, never held."""
        frame.release()

    def decide(self, part_id: int, verdict: Verdict | None, policy: ImagePolicy | None) -> bool:
        """The part has its verdict (None: the part is unknown): copy the images the policy
        keeps, release its frames, and say whether its images are kept."""
        tokens = self._held.pop(part_id, {})
        keep = False
        if verdict is not None and policy is not None:
            if verdict is not Verdict.PASS:
                keep = policy.save_rejected
            else:
                self._passed_seen += 1
                keep = policy.sample_passed_every > 0 and self._passed_seen % policy.sample_passed_every == 0
        if keep:
            self._images[part_id] = {
                cam: fr.image.copy() for cam, t in tokens.items() if (fr := self._frames.get(t)) is not None
            }
        for token in tokens.values():
            self.release(token)
        return keep

    def kept(self, part_id: int) -> bool:
        """The part's images are kept for its record."""
        return part_id in self._images

    def take(self, part_id: int) -> dict[str, np.ndarray]:
        """The part's kept images, for its record (none when not kept)."""
        return self._images.pop(part_id, {})

    @property
    def holding(self) -> int:
        """Buffers held now (arrived, not released)."""
        return len(self._frames)

    def release_all(self, workers_stopped: bool = True) -> int:
        """Release every buffer still held at shutdown: waiting, decided on, and, once every
        inference worker has stopped, in inference. A worker that did not stop may still read
        its frames: those are left unreleased (a driver's buffer handed back to the grab engine
        while it is read would be overwritten under it). Returns how many were left."""
        left = 0
        for token in list(self._frames):
            if token in self._lent and not workers_stopped:
                left += 1
                continue
            self.release(token)
        self._held.clear()
        return left
