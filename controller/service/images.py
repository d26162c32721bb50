"""The image keeper: camera frames of undecided parts, and the images kept for their records.

A frame's buffer belongs to its camera driver until released; the keeper holds the frames of
each part until its verdict, then keeps copies of the images the recipe's policy asks for
(every view of a rejected part; every n-th passed part) and releases every buffer exactly once.
The kept images go with the part's record.
"""

from __future__ import annotations

import numpy as np

from controller.config import ImagePolicy
from controller.contract import Verdict
from controller.interfaces import Frame


class ImageKeeper:
    """Frames by part until decided; the images kept for records by part."""

    def __init__(self) -> None:
        self._frames: dict[int, dict[str, Frame]] = {}
        self._images: dict[int, dict[str, np.ndarray]] = {}
        self._passed_seen = 0

    def hold(self, part_id: int, frame: Frame) -> None:
        """Keep a view's frame of an undecided part until its verdict."""
        self._frames.setdefault(part_id, {})[frame.camera] = frame

    @staticmethod
    def drop(frame: Frame) -> None:
        """A frame no part needs (late, unmatched, or the cell is gone): released now."""
        frame.release()

    def decide(self, part_id: int, verdict: Verdict | None, policy: ImagePolicy | None) -> bool:
        """The part has its verdict (None: the part is unknown): copy the images the policy
        keeps, release its frames, and say whether its images are kept."""
        frames = self._frames.pop(part_id, {})
        keep = False
        if verdict is not None and policy is not None:
            if verdict is not Verdict.PASS:
                keep = policy.save_rejected
            else:
                self._passed_seen += 1
                keep = policy.sample_passed_every > 0 and self._passed_seen % policy.sample_passed_every == 0
        if keep:
            self._images[part_id] = {cam: fr.image.copy() for cam, fr in frames.items()}
        for fr in frames.values():
            fr.release()
        return keep

    def kept(self, part_id: int) -> bool:
        """The part's images are kept for its record."""
        return part_id in self._images

    def take(self, part_id: int) -> dict[str, np.ndarray]:
        """The part's kept images, for its record (none when not kept)."""
        return self._images.pop(part_id, {})

    def release_all(self) -> None:
        """Release every frame still held (at shutdown)."""
        for frames in self._frames.values():
            for fr in frames.values():
                fr.release()
        self._frames.clear()
