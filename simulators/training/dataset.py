"""Synthetic labelled views from the part generator and renderer (no PyTorch needed)."""

from __future__ import annotations

import numpy as np

from simulators.parts import DEFECTS, PartGenerator, PartTruth
from simulators.render import SIZE, render


def make_parts(seed: int, n_parts: int, n_views: int, defect_rate: float) -> list[PartTruth]:
    gen = PartGenerator(seed, n_views, defect_rate)
    return [gen.next(i + 1) for i in range(n_parts)]


def render_views(parts: list[PartTruth], n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N·V, H, W, 3) uint8 and multi-hot labels (N·V, classes) float32, part-major."""
    images = np.empty((len(parts) * n_views, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.zeros((len(parts) * n_views, len(DEFECTS)), dtype=np.float32)
    for i, part in enumerate(parts):
        for v in range(n_views):
            k = i * n_views + v
            visible = part.visible(v)
            render(part.seed, v, visible, out=images[k])
            for d in visible:
                labels[k, DEFECTS.index(d)] = 1.0
    return images, labels
