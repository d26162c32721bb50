"""Adapters: a model's raw outputs for one view become a ViewResult with scores, defects and regions.

Each adapter takes the view's slice of every model output (batch dimension removed), in the
model's output order, and is chosen by the recipe's `model.kind`:

- `multilabel_classifier`: one sigmoid score per class; a class at or over its threshold is a defect.
- `classifier`: softmax (or logits) over named classes, some of them good; the top class decides.
- `anomaly`: an anomalib export, image score and anomaly map, normalised with the recipe's
  min/max; over the threshold is an `anomaly` defect with the region of the map over it.
- `detector`: the YOLO export layout (4 box coordinates + one score per class, per anchor),
  non-maximum suppression, per-class thresholds and minimum areas.
- `segmentation`: per-class score masks; a class whose mask covers its minimum area is a defect.

Regions are (class, x, y, w, h) in model-input pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from controller.config import Recipe
from controller.core.types import ReasonCode, Region, ViewResult, ViewStatus


class Adapter(Protocol):
    def __call__(self, camera: str, outputs: Sequence[np.ndarray]) -> ViewResult: ...


def adapt_all(adapter: Adapter, cameras: Sequence[str], outputs: Sequence[np.ndarray]) -> list[ViewResult]:
    """Every view of a batch (view k is row k of every output). An adapter with a `batch` method
    reads the whole batch at once, which saves the per-view slicing on the hot path."""
    batch = getattr(adapter, "batch", None)
    if batch is not None:
        got: list[ViewResult] = batch(cameras, outputs)
        return got
    return [adapter(cam, [out[k] for out in outputs]) for k, cam in enumerate(cameras)]


def _finite(name: str, arr: np.ndarray, ndim: int) -> np.ndarray:
    if arr.ndim != ndim or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected {ndim}-d finite output, got shape {arr.shape}")
    return arr


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x, y, w, h of the true pixels of a 2-d mask (which has some)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _per_class(names: Sequence[str], values: Mapping[str, float], default: float) -> np.ndarray:
    """A float32 vector in class order: the class's value, or `default`."""
    return np.array([values.get(c, default) for c in names], dtype=np.float32)


def _softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def _round(scores: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(s), 4) for s in scores)


class MultiLabelAdapter:
    """One score per defect class (sigmoid); a class at or over its threshold is a defect.

    Plain Python over a handful of floats: several times quicker than numpy calls on tiny arrays.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        thresholds: Mapping[str, float],
        default: float = 0.5,
        uncertain_band: float = 0.0,
    ) -> None:
        self.class_names = tuple(class_names)
        self.thresholds = [float(np.float32(thresholds.get(c, default))) for c in self.class_names]
        self.uncertain_band = float(np.float32(uncertain_band))

    def __call__(self, camera: str, outputs: Sequence[np.ndarray]) -> ViewResult:
        scores = outputs[0]
        return self._one(camera, scores.tolist() if scores.ndim == 1 else [], scores.shape)

    def batch(self, cameras: Sequence[str], outputs: Sequence[np.ndarray]) -> list[ViewResult]:
        """Every view of a batch: one conversion of the score matrix to Python floats."""
        scores = outputs[0]
        rows: list[list[float]] = scores.tolist() if scores.ndim == 2 else [[] for _ in cameras]
        if len(rows) != len(cameras):
            raise ValueError(f"model output {scores.shape} does not hold {len(cameras)} views")
        return [self._one(cam, vals, scores.shape[1:]) for cam, vals in zip(cameras, rows, strict=True)]

    def _one(self, camera: str, vals: list[float], shape: tuple[int, ...]) -> ViewResult:
        if len(vals) != len(self.class_names) or not all(map(math.isfinite, vals)):
            raise ValueError(f"model output {shape} is not {len(self.class_names)} finite scores")
        names, th = self.class_names, self.thresholds
        over = tuple(names[i] for i, (v, t) in enumerate(zip(vals, th, strict=True)) if v >= t)
        rounded = tuple(round(v, 4) for v in vals)
        if self.uncertain_band and not over:
            band = self.uncertain_band
            near = tuple(names[i] for i, (v, t) in enumerate(zip(vals, th, strict=True)) if v >= t - band)
            if near:  # close under a threshold and nothing clearly over: not sure, reject
                return ViewResult(camera, ViewStatus.UNCERTAIN, rounded, near, ReasonCode.UNCERTAIN)
        return ViewResult(camera, ViewStatus.OK, rounded, over)


class ClassifierAdapter:
    """Mutually exclusive classes: the top class decides; a top class under `min_confidence` is
    uncertain (rejected). A defect class must also reach its own threshold."""

    def __init__(
        self,
        class_names: Sequence[str],
        good_classes: Sequence[str],
        thresholds: Mapping[str, float],
        default: float = 0.5,
        logits: bool = False,
        min_confidence: float = 0.0,
    ) -> None:
        self.class_names = tuple(class_names)
        self.good = np.array([c in good_classes for c in self.class_names])
        self.thresholds = _per_class(self.class_names, thresholds, default)
        self.logits, self.min_confidence = logits, np.float32(min_confidence)

    def __call__(self, camera: str, outputs: Sequence[np.ndarray]) -> ViewResult:
        x = _finite("classifier scores", outputs[0], 1)
        if x.shape != self.thresholds.shape:
            raise ValueError(f"model output {x.shape} is not {len(self.class_names)} class scores")
        if self.logits:
            x = _softmax(x)
        top = int(np.argmax(x))
        scores = _round(x)
        if x[top] < self.min_confidence:
            return ViewResult(
                camera, ViewStatus.UNCERTAIN, scores, (self.class_names[top],), ReasonCode.UNCERTAIN
            )
        if self.good[top] or x[top] < self.thresholds[top]:
            return ViewResult(camera, ViewStatus.OK, scores)
        return ViewResult(camera, ViewStatus.OK, scores, (self.class_names[top],))


class AnomalyAdapter:
    """anomalib's export: an image score and an anomaly map, min-max normalised from the recipe."""

    def __init__(
        self, norm_min: float, norm_max: float, threshold: float = 0.5, uncertain_band: float = 0.0,
        score_output: int = 0, map_output: int | None = 1,
    ) -> None:  # fmt: skip
        if not norm_max > norm_min:
            raise ValueError("anomaly normalisation needs max > min")
        self.lo, self.span = np.float32(norm_min), np.float32(norm_max - norm_min)
        self.threshold, self.band = np.float32(threshold), np.float32(uncertain_band)
        self.score_output, self.map_output = score_output, map_output

    def _norm(self, a: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.clip((a - self.lo) / self.span, 0.0, 1.0)
        return out

    def __call__(self, camera: str, outputs: Sequence[np.ndarray]) -> ViewResult:
        raw = outputs[self.score_output].reshape(-1)
        if raw.size != 1 or not np.isfinite(raw[0]):
            raise ValueError(f"anomaly score: expected one finite value, got shape {raw.shape}")
        score = float(self._norm(raw)[0])
        if score >= self.threshold:
            regions: tuple[Region, ...] = ()
            if self.map_output is not None:
                amap = _finite("anomaly map", np.squeeze(outputs[self.map_output]), 2)
                over = self._norm(amap) >= self.threshold
                if over.any():
                    regions = (("anomaly", *_bbox(over)),)
            return ViewResult(camera, ViewStatus.OK, (round(score, 4),), ("anomaly",), regions=regions)
        if self.band and score >= self.threshold - self.band:
            return ViewResult(
                camera, ViewStatus.UNCERTAIN, (round(score, 4),), ("anomaly",), ReasonCode.UNCERTAIN
            )
        return ViewResult(camera, ViewStatus.OK, (round(score, 4),))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression; boxes are x1, y1, x2, y2."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        order = rest[inter / (area[i] + area[rest] - inter + 1e-9) <= iou]
    return np.array(keep, dtype=np.int64)


class DetectorAdapter:
    """The YOLO export layout: (4 + classes, anchors), boxes as centre x, y, width, height."""

    def __init__(
        self, class_names: Sequence[str], thresholds: Mapping[str, float], default: float = 0.5,
        min_area_px: Mapping[str, float] | None = None, iou: float = 0.5, max_regions: int = 20,
    ) -> None:  # fmt: skip
        self.class_names = tuple(class_names)
        self.thresholds = _per_class(self.class_names, thresholds, default)
        self.min_area = _per_class(self.class_names, min_area_px or {}, 0.0)
        self.iou, self.max_regions = iou, max_regions

    def __call__(self, camera: str, outputs: Sequence[np.ndarray]) -> ViewResult:
        out = _finite("detector output", outputs[0], 2)
        n = len(self.class_names)
        if out.shape[0] != 4 + n:
            raise ValueError(f"detector output has {out.shape[0]} rows, expected 4 + {n} classes")
        cls_scores = out[4:]
        cls = np.argmax(cls_scores, axis=0)
        conf = cls_scores[cls, np.arange(out.shape[1])]
        cx, cy, w, h = out[:4]
        keep = (conf >= self.thresholds[cls]) & (w * h >= self.min_area[cls])
        best = np.zeros(n, dtype=np.float32)
        np.maximum.at(best, cls, conf)
        if not keep.any():
            return ViewResult(camera, ViewStatus.OK, _round(best))
        idx = np.flatnonzero(keep)
        boxes = np.stack(
            [cx[idx] - w[idx] / 2, cy[idx] - h[idx] / 2, cx[idx] + w[idx] / 2, cy[idx] + h[idx] / 2], 1
        )
        # Per-class NMS in one pass: offset each class's boxes so classes never overlap.
        offset = cls[idx, None].astype(np.float32) * (boxes.max() + 1.0)
        kept = idx[nms(boxes + offset, conf[idx], self.iou)][: self.max_regions]
        regions = tuple(
            (
                self.class_names[int(cls[k])],
                int(cx[k] - w[k] / 2),
                int(cy[k] - h[k] / 2),
                int(w[k]),
                int(h[k]),
            )
            for k in kept
        )
        defects = tuple(dict.fromkeys(r[0] for r in regions))
        return ViewResult(camera, ViewStatus.OK, _round(best), defects, regions=regions)


class SegmentationAdapter:
    """Per-class score masks (classes, H, W), probabilities or logits; class 0 may be background."""

    def __init__(
        self, class_names: Sequence[str], good_classes: Sequence[str], thresholds: Mapping[str, float],
        default: float = 0.5, min_area_px: Mapping[str, float] | None = None, logits: bool = False,
    ) -> None:  # fmt: skip
        self.class_names = tuple(class_names)
        self.defect_idx = [i for i, c in enumerate(self.class_names) if c not in good_classes]
        self.thresholds = _per_class(self.class_names, thresholds, default)
        self.min_area = _per_class(self.class_names, min_area_px or {}, 1.0)
        self.logits = logits

    def __call__(self, camera: str, outputs: Sequence[np.ndarray]) -> ViewResult:
        m = _finite("segmentation output", outputs[0], 3)
        if m.shape[0] != len(self.class_names):
            raise ValueError(f"segmentation output has {m.shape[0]} masks, expected {len(self.class_names)}")
        if self.logits:
            m = _softmax(m)
        top = np.argmax(m, axis=0)
        scores = m.reshape(m.shape[0], -1).max(axis=1)
        defects: list[str] = []
        regions: list[Region] = []
        for i in self.defect_idx:
            mask = (top == i) & (m[i] >= self.thresholds[i])
            if mask.sum() >= self.min_area[i]:
                defects.append(self.class_names[i])
                regions.append((self.class_names[i], *_bbox(mask)))
        return ViewResult(camera, ViewStatus.OK, _round(scores), tuple(defects), regions=tuple(regions))


def make_adapter(recipe: Recipe, output_names: Sequence[str]) -> Adapter:
    """The adapter the recipe's `model.kind` names, set from the recipe. Raises ValueError."""
    m, th, default = recipe.model, recipe.thresholds, recipe.default_threshold
    band = recipe.reject.uncertain_band
    if m.kind == "classifier":
        return ClassifierAdapter(m.class_names, m.good_classes, th, default, m.logits, m.min_confidence)
    if m.kind == "anomaly":
        names = list(output_names)

        def index(name: str) -> int:
            if name not in names:
                raise ValueError(f"anomaly model has no output {name!r} (it has {', '.join(names)})")
            return names.index(name)

        map_idx = index(m.map_output) if m.map_output else None
        threshold = th.get("anomaly", default)
        return AnomalyAdapter(m.norm_min, m.norm_max, threshold, band, index(m.score_output), map_idx)
    if m.kind == "detector":
        return DetectorAdapter(m.class_names, th, default, m.min_area_px, m.nms_iou)
    if m.kind == "segmentation":
        return SegmentationAdapter(m.class_names, m.good_classes, th, default, m.min_area_px, m.logits)
    return MultiLabelAdapter(m.class_names, th, default, band)
