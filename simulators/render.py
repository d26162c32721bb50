"""Synthetic camera images of parts: a machined plate with four bores, seen from one face.

Deterministic from (part seed, view). Vectorised numpy on precomputed grids; writes into a
caller's buffer. Each defect class has a visible signature the model can learn:
scratch (thin bright line), spot (dark blob), crack (dark jagged line), missing feature (a bore
not drilled), colour shift (hue of the plate), misalignment (plate shifted and rotated).
"""

from __future__ import annotations

import itertools

import numpy as np

SIZE = 64
_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
_BASE = np.array([150.0, 160.0, 175.0], dtype=np.float32)
_SHIFTED = np.array([185.0, 150.0, 110.0], dtype=np.float32)
_BG = np.array([30.0, 32.0, 36.0], dtype=np.float32)


def _segment_distance(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((_X - x0) * dx + (_Y - y0) * dy) / (dx * dx + dy * dy + 1e-6), 0.0, 1.0)
    return np.hypot(_X - (x0 + t * dx), _Y - (y0 + t * dy))  # type: ignore[no-any-return]


def render(seed: int, view: int, defects: tuple[str, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Render the view `view` of a part into `out` (SIZE×SIZE×3 uint8), with `defects` visible."""
    rng = np.random.default_rng([seed, view])
    if out is None:
        out = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    c = SIZE / 2
    if "empty" in defects:  # a trigger with no part in front of the lens: bare belt
        img = np.broadcast_to(_BG, (SIZE, SIZE, 3)) + rng.normal(0.0, 4.0, size=(SIZE, SIZE, 3))
        np.clip(img, 0, 255, out=img)
        out[...] = img
        return out
    # Normal placement jitter is small; misalignment is well outside it.
    if "misalignment" in defects:
        sign = rng.choice([-1.0, 1.0], size=2)
        cx, cy = c + sign[0] * rng.uniform(6, 9), c + sign[1] * rng.uniform(6, 9)
        ang = rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.4)
    else:
        cx, cy = c + rng.uniform(-1.5, 1.5), c + rng.uniform(-1.5, 1.5)
        ang = rng.uniform(-0.05, 0.05)
    ca, sa = np.cos(ang), np.sin(ang)
    u = (_X - cx) * ca + (_Y - cy) * sa
    v = -(_X - cx) * sa + (_Y - cy) * ca
    half = 20.0
    plate = np.clip(half + 0.5 - np.maximum(np.abs(u), np.abs(v)), 0.0, 1.0)[..., None]
    colour = _SHIFTED if "colour_shift" in defects else _BASE
    light = rng.uniform(0.92, 1.08)
    img = _BG + plate * (colour * light - _BG)
    # Four bores; a missing feature leaves one undrilled.
    missing = int(rng.integers(4)) if "missing_feature" in defects else -1
    for i, (bu, bv) in enumerate(((-11, -11), (11, -11), (-11, 11), (11, 11))):
        if i == missing:
            continue
        bore = np.clip(3.5 - np.hypot(u - bu, v - bv), 0.0, 1.0)[..., None]
        img -= bore * (img - 55.0)
    if "scratch" in defects:
        x0, y0 = cx + rng.uniform(-15, -5), cy + rng.uniform(-15, 15)
        x1, y1 = cx + rng.uniform(5, 15), cy + rng.uniform(-15, 15)
        line = np.clip(1.2 - _segment_distance(x0, y0, x1, y1), 0.0, 1.0)[..., None] * plate
        img += line * (250.0 - img)
    if "spot" in defects:
        sx, sy, r = cx + rng.uniform(-8, 8), cy + rng.uniform(-8, 8), rng.uniform(2.0, 3.5)
        blob = np.clip(r - np.hypot(_X - sx, _Y - sy), 0.0, 1.0)[..., None] * plate
        img -= blob * (img - 70.0)
    if "crack" in defects:
        pts = [(cx + rng.uniform(-16, -8), cy + rng.uniform(-16, 16))]
        for _ in range(4):
            px, py = pts[-1]
            pts.append((px + rng.uniform(4, 7), py + rng.uniform(-5, 5)))
        d = np.min([_segment_distance(*a, *b) for a, b in itertools.pairwise(pts)], axis=0)
        crack = np.clip(1.0 - d, 0.0, 1.0)[..., None] * plate
        img -= crack * (img - 20.0)
    img += rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)
    np.clip(img, 0, 255, out=img)
    out[...] = img
    return out
