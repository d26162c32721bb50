"""Encoder arithmetic: signed modular differences and unwrapping a 32-bit counter to 64 bits."""

from __future__ import annotations

from collections import deque

import numpy as np

WRAP = 1 << 32
HALF = 1 << 31


def signed_diff(a: int, b: int) -> int:
    """`a - b` for two raw 32-bit counts, correct across one rollover (|a - b| < 2^31)."""
    return ((a - b + HALF) % WRAP) - HALF


class EncoderUnwrapper:
    """Turns successive raw 32-bit counts into a monotonic-in-practice 64-bit position."""

    def __init__(self) -> None:
        self._raw: int | None = None
        self.position = 0

    def update(self, raw: int) -> int:
        """Feed one raw reading; returns the unwrapped position."""
        if self._raw is None:
            self.position = raw
        else:
            self.position += signed_diff(raw, self._raw)
        self._raw = raw
        return self.position

    def unwrap_past(self, raw: int) -> int:
        """Unwrapped position of a raw count taken near the current one (e.g. a sensor latch)."""
        if self._raw is None:
            return raw
        return self.position + signed_diff(raw, self._raw)


class EncoderHistory:
    """Recent (time, position) samples; answers 'where was the belt at time t'.

    Frames carry a trigger timestamp, not a position. The answer is a least-squares line
    through the samples within `window_s` of t: a few stale samples (a PLC scan or a read
    that ran late) pull it by a fraction of their error instead of all of it.
    """

    def __init__(self, size: int = 256, window_s: float = 0.06) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=size)
        self.window_s = window_s

    def add(self, t: float, position: int) -> None:
        if self._samples and t <= self._samples[-1][0]:
            return
        self._samples.append((t, position))

    def position_at(self, t: float) -> int | None:
        s = self._samples
        if len(s) < 2:
            return s[-1][1] if s else None
        near: list[tuple[float, int]] = []
        for ts, pos in reversed(s):  # newest first: frames are recent
            if ts < t - self.window_s:
                break
            if ts <= t + self.window_s:
                near.append((ts, pos))
        if len(near) < 2:  # far from every sample: the line through the two nearest in time
            near = [s[0], s[1]] if t <= s[0][0] else [s[-2], s[-1]]
        arr = np.asarray(near, dtype=np.float64)
        t0, p0 = arr[0]
        dt, dp = arr[:, 0] - t0, arr[:, 1] - p0
        var = float(np.dot(dt - dt.mean(), dt - dt.mean()))
        if var <= 0.0:
            return int(p0)
        slope = float(np.dot(dt - dt.mean(), dp - dp.mean())) / var
        return int(round(float(p0 + dp.mean() + slope * (t - t0 - dt.mean()))))  # noqa: RUF046
