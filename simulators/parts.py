"""Ground truth for simulated parts: which defects each part has, and from which views they show."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Defect classes, in the model's output order.
DEFECTS: tuple[str, ...] = ("scratch", "spot", "crack", "missing_feature", "colour_shift", "misalignment")
#: Defects of one face, seen by the one camera looking at that face.
LOCAL = frozenset({"scratch", "spot", "crack", "missing_feature"})


@dataclass(frozen=True, slots=True)
class PartTruth:
    """One physical part: its render seed and its defects as (kind, views where visible)."""

    part_id: int
    seed: int
    defects: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def defective(self) -> bool:
        return bool(self.defects)

    def visible(self, view: int) -> tuple[str, ...]:
        return tuple(kind for kind, views in self.defects if view in views)


class PartGenerator:
    """Deterministic stream of parts from a seed; `defect_rate` is the share of defective parts."""

    def __init__(self, seed: int, n_views: int, defect_rate: float = 0.3) -> None:
        self._rng = np.random.default_rng(seed)
        self.n_views = n_views
        self.defect_rate = defect_rate

    def next(self, part_id: int) -> PartTruth:
        rng = self._rng
        seed = int(rng.integers(0, 2**31))
        defects: list[tuple[str, tuple[int, ...]]] = []
        if rng.random() < self.defect_rate:
            n = 1 if rng.random() < 0.85 else 2
            for kind in rng.choice(DEFECTS, size=n, replace=False):
                k = str(kind)
                views = (int(rng.integers(self.n_views)),) if k in LOCAL else tuple(range(self.n_views))
                defects.append((k, views))
        return PartTruth(part_id, seed, tuple(defects))
