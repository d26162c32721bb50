"""Adapters: a model's raw output for one view becomes a ViewResult with scores and defects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from controller.core.types import ReasonCode, ViewResult, ViewStatus


class MultiLabelAdapter:
    """One score per defect class (sigmoid); a class at or over its threshold is a defect."""

    def __init__(
        self,
        class_names: Sequence[str],
        thresholds: Mapping[str, float],
        default: float = 0.5,
        uncertain_band: float = 0.0,
    ) -> None:
        self.class_names = tuple(class_names)
        self.thresholds = np.array([thresholds.get(c, default) for c in self.class_names], dtype=np.float32)
        self.uncertain_band = np.float32(uncertain_band)

    def __call__(self, camera: str, scores: np.ndarray) -> ViewResult:
        if scores.shape != self.thresholds.shape or not np.all(np.isfinite(scores)):
            raise ValueError(f"model output {scores.shape} is not {len(self.class_names)} finite scores")
        over = np.flatnonzero(scores >= self.thresholds)
        rounded = tuple(round(float(s), 4) for s in scores)
        if self.uncertain_band and not over.size:
            near = np.flatnonzero(scores >= self.thresholds - self.uncertain_band)
            if near.size:  # close under a threshold and nothing clearly over: not sure, reject
                names = tuple(self.class_names[i] for i in near)
                return ViewResult(camera, ViewStatus.UNCERTAIN, rounded, names, ReasonCode.UNCERTAIN)
        return ViewResult(
            camera,
            ViewStatus.OK,
            rounded,
            tuple(self.class_names[i] for i in over),
        )
