"""Encoder arithmetic: signed modular differences and unwrapping a 32-bit counter to 64 bits."""

from __future__ import annotations

from collections import deque

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

    Frames carry a trigger timestamp, not a position; the position at that instant is
    interpolated between PLC samples (or extrapolated from the last two at the belt's speed).
    """

    def __init__(self, size: int = 256) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=size)

    def add(self, t: float, position: int) -> None:
        if self._samples and t <= self._samples[-1][0]:
            return
        self._samples.append((t, position))

    def position_at(self, t: float) -> int | None:
        s = self._samples
        if len(s) < 2:
            return s[-1][1] if s else None
        if t >= s[-1][0]:
            (t0, p0), (t1, p1) = s[-2], s[-1]
        elif t <= s[0][0]:
            (t0, p0), (t1, p1) = s[0], s[1]
        else:
            # Newest samples are where frames land: scan backwards.
            i = len(s) - 1
            while s[i - 1][0] > t:
                i -= 1
            (t0, p0), (t1, p1) = s[i - 1], s[i]
        return round(p0 + (p1 - p0) * (t - t0) / (t1 - t0))
