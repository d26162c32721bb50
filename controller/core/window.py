"""A sliding window of the newest samples of one series (latencies), kept in a preallocated
array, with its median and 99th percentile.

The status snapshot reads a few of these on the control loop each time a console, the API or a
plant connection asks (several times a second), so reading is one partial sort of one array:
no conversion of a deque, no full sort. Appending writes one slot.
"""

from __future__ import annotations

import numpy as np


class Window:
    """The newest `size` samples appended (older ones are overwritten)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a window holds at least one sample, not {size}")
        self._values = np.empty(size, dtype=np.float64)
        self._next = 0  # the slot the next sample goes into
        self._count = 0

    def append(self, value: float) -> None:
        self._values[self._next] = value
        self._next = (self._next + 1) % self._values.size
        self._count = min(self._count + 1, self._values.size)

    def __len__(self) -> int:
        return self._count

    def values(self) -> np.ndarray:
        """A copy of the samples held, oldest first."""
        v = self._values
        if self._count < v.size:
            return v[: self._count].copy()
        return np.concatenate((v[self._next :], v[: self._next]))

    def p50_p99(self) -> tuple[float, float]:
        """The median and the 99th percentile, interpolated as `numpy.percentile` does
        (linearly between the two nearest ranks); NaN for an empty window."""
        n = self._count
        if n == 0:
            return float("nan"), float("nan")
        ranks = (0.5 * (n - 1), 0.99 * (n - 1))
        pairs = [(int(r), min(int(r) + 1, n - 1)) for r in ranks]  # the two nearest ranks
        part = np.partition(self._values[:n], sorted({k for pair in pairs for k in pair}))
        p50, p99 = (
            part[lo] + (part[hi] - part[lo]) * (r - lo) for r, (lo, hi) in zip(ranks, pairs, strict=True)
        )
        return float(p50), float(p99)
