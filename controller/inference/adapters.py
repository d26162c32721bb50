"""Adapters: a model's raw output for one view becomes a ViewResult with scores and defects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from controller.core.types import ViewResult, ViewStatus


class MultiLabelAdapter:
    """One score per defect class (sigmoid); a class at or over its threshold is a defect."""

    def __init__(
        self, class_names: Sequence[str], thresholds: Mapping[str, float], default: float = 0.5
    ) -> None:
        self.class_names = tuple(class_names)
        self.thresholds = np.array([thresholds.get(c, default) for c in self.class_names], dtype=np.float32)

    def __call__(self, camera: str, scores: np.ndarray) -> ViewResult:
        if scores.shape != self.thresholds.shape or not np.all(np.isfinite(scores)):
            raise ValueError(f"model output {scores.shape} is not {len(self.class_names)} finite scores")
        over = np.flatnonzero(scores >= self.thresholds)
        return ViewResult(
            camera,
            ViewStatus.OK,
            tuple(round(float(s), 4) for s in scores),
            tuple(self.class_names[i] for i in over),
        )
