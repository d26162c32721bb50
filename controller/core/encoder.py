"""Encoder arithmetic: signed modular differences and unwrapping a 32-bit counter to 64 bits."""

from __future__ import annotations

import math
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

    def __init__(self, size: int = 256, window_s: float = 0.06, max_speed: float = 0.0) -> None:
        """`max_speed`: the fastest the belt can move (counts/s; 0: unknown), how far it may have
        gone where no sample says (a belt may start, stop or speed up during a stall of reads)."""
        self._samples: deque[tuple[float, int, float]] = deque(maxlen=size)
        self.window_s = window_s
        self.max_speed = max_speed

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
        gap = older is not None and newer is not None and newer[0] - older[0] > self.window_s
        alone = len(near) < 2
        if gap and alone:
            near = [older, newer]  # type: ignore[list-item]  # both set: a gap between them
        elif alone:
            near = [s[0], s[1]] if t <= s[0][0] else [s[-2], s[-1]]
        pos, spread = self._fit(near, t)
        # Where the belt can have been: past the value of the sample surely before t (a value is
        # never newer than its read); before the one surely after t where the line was not drawn
        # through it (a PLC latches its encoder up to a scan before it serves it, so within the
        # stretch the fit weighs that sample itself), or either side of a gap.
        low, high = self._sure(t, older, newer if gap or newer not in near else None)
        if gap and alone:  # no sample in the gap: it was somewhere between, no more is known
            return int(round((low + high) / 2)), (high - low) / 2  # noqa: RUF046
        # The fit's range within what is sure; where the two disagree (the belt started or sped
        # up in a stall of reads), what is sure, whole.
        lo, hi = max(pos - spread, low), min(pos + spread, high)
        if lo > hi:
            lo, hi = (low, high) if math.isfinite(low) and math.isfinite(high) else (min(lo, hi), max(lo, hi))
        return int(round((lo + hi) / 2)), (hi - lo) / 2  # noqa: RUF046

    def _sure(
        self, t: float, older: tuple[float, int, float] | None, newer: tuple[float, int, float] | None
    ) -> tuple[float, float]:
        """Where the belt surely was at t: not before the sample surely before t, not past the
        one surely after, and no further from either than `max_speed` carries it (±inf where
        nothing says)."""
        low, high, v = -math.inf, math.inf, self.max_speed
        if older is not None:
            low = older[1]
            if v > 0:
                high = older[1] + v * (t - (older[0] - older[2]))
        if newer is not None:
            high = min(high, newer[1])
            if v > 0:
                low = max(low, newer[1] - v * (newer[0] + newer[2] - t))
        return (low, high) if low <= high else (high, low)  # a count back: belt jitter

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
        spread += max(abs(slope), self.max_speed) * max(beyond, 0.0)  # it may have changed speed
        return float(p0 + p_mean + slope * (t - t0 - t_mean)), spread
