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

    @property
    def raw(self) -> int | None:
        """The last raw reading."""
        return self._raw

    def rebase(self, raw: int) -> None:
        """Take `raw` as the current position (an implausible step: the position does not jump)."""
        self._raw = raw

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
    """Recent (time, position, time uncertainty) samples; answers 'where was the belt at time t'.

    Frames carry a trigger timestamp, not a position. The answer is a least-squares line
    through the samples within `window_s` of t, each weighted by how precisely it is timed, with
    how far off it may be: the belt's speed times how uncertain the samples' times are (a PLC
    publishes its encoder once per scan, somewhere between two of the cell's reads), plus the
    scatter of the samples about the line.
    Past the newest sample (or before the oldest) the line through the samples within
    `window_s` of that end is followed; more than `window_s` from it, the belt may have changed
    speed, and the spread grows by the distance it covers in that time. In a gap of samples the
    belt was somewhere between the two surely before and surely after t: the answer says no more.
    """

    def __init__(self, size: int = 256, window_s: float = 0.06) -> None:
        self._samples: deque[tuple[float, int, float]] = deque(maxlen=size)
        self.window_s = window_s

    def clear(self) -> None:
        self._samples.clear()

    def add(self, t: float, position: int, uncertainty_s: float = 0.0) -> None:
        if self._samples and t <= self._samples[-1][0]:
            return
        self._samples.append((t, position, uncertainty_s))

    def speed(self) -> float:
        """Counts per second over the newest samples (0 without two)."""
        s = self._samples
        if len(s) < 2 or s[-1][0] <= s[0][0]:
            return 0.0
        old = next((x for x in s if x[0] >= s[-1][0] - self.window_s), s[0])
        dt = s[-1][0] - old[0]
        return (s[-1][1] - old[1]) / dt if dt > 0 else 0.0

    def position_at(self, t: float) -> int | None:
        found = self.locate(t)
        return None if found is None else found[0]

    def locate(self, t: float) -> tuple[int, float] | None:
        """(position, ± counts it may be off) of the belt at time t, or None without samples."""
        s = self._samples
        if len(s) < 2:
            return (s[-1][1], 0.0) if s else None
        # Outside the samples, the line through the end's stretch: two samples ms apart, timed
        # to a ms, give a slope too rough to follow for long. (The newest sample may be a loose
        # one, after a stall of reads: the stretch is the one before it.)
        tc = min(max(t, s[0][0]), s[-1][0] - s[-1][2])
        near: list[tuple[float, int, float]] = []
        older = newer = None  # the samples surely before and surely after t (±their looseness)
        for sample in reversed(s):  # newest first: frames are recent
            ts, _, loose = sample
            if ts - loose >= t:
                newer = sample
            elif older is None and ts + loose <= t:
                older = sample
            if ts < tc - self.window_s:
                if older is not None:
                    break
                continue
            if ts <= tc + self.window_s:
                near.append(sample)
        if older is not None and newer is not None and newer[0] - older[0] > self.window_s:
            # In a gap of samples the belt was between the samples surely before and after t.
            lo, hi = older[1], newer[1]
            if len(near) >= 2:
                pos, spread = self._fit(near, t)
                low, high = max(pos - spread, lo), min(pos + spread, hi)
                if low <= high:
                    return int(round((low + high) / 2)), (high - low) / 2  # noqa: RUF046
            pos, _ = self._fit([older, newer], t)
            return int(round(pos)), max(pos - lo, hi - pos)  # noqa: RUF046
        if len(near) < 2:
            near = [s[0], s[1]] if t <= s[0][0] else [s[-2], s[-1]]
        pos, spread = self._fit(near, t)
        return int(round(pos)), spread  # noqa: RUF046

    def _fit(self, near: list[tuple[float, int, float]], t: float) -> tuple[float, float]:
        """The line through `near` at t, and how far off it may be."""
        arr = np.asarray(near, dtype=np.float64)
        # Weighted by how precisely each sample is timed: one read after a stall of reads, timed
        # halfway through it, must not pull the line that the samples timed to a ms draw.
        w = 1.0 / np.maximum(arr[:, 2], 1e-4) ** 2
        w_sum = float(w.sum())
        t0, p0 = arr[0, 0], arr[0, 1]
        dt, dp = arr[:, 0] - t0, arr[:, 1] - p0
        t_mean, p_mean = float(np.dot(w, dt)) / w_sum, float(np.dot(w, dp)) / w_sum
        dtc = dt - t_mean
        var = float(np.dot(w, dtc * dtc))
        if var <= 0.0:
            return float(int(p0)), 0.0
        slope = float(np.dot(w, dtc * (dp - p_mean))) / var
        resid = dp - p_mean - slope * dtc
        scatter = float(np.sqrt(np.dot(w, resid * resid) / w_sum))
        spread = abs(slope) * float(np.dot(w, arr[:, 2])) / w_sum + 2.0 * scatter
        # How far t is from a sample that says where the belt was, counting its own looseness.
        beyond = float((np.abs(arr[:, 0] - t) + arr[:, 2]).min()) - self.window_s
        spread += abs(slope) * max(beyond, 0.0)
        return float(p0 + p_mean + slope * (t - t0 - t_mean)), spread
