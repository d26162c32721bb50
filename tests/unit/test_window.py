"""The latency window: the newest samples only, and the same median and 99th percentile as
numpy.percentile, read without sorting the whole series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.core.window import Window

SIZES = [(1, 1), (1, 5), (7, 3), (7, 7), (7, 20), (2048, 1), (2048, 100), (2048, 5000)]


@pytest.mark.parametrize("size, n", SIZES)
def test_percentiles_match_numpy_over_the_newest_samples(size: int, n: int) -> None:
    rng = np.random.default_rng(size * 10_000 + n)
    samples = rng.exponential(0.005, n)
    w = Window(size)
    for x in samples:
        w.append(float(x))
    newest = samples[-size:]
    assert len(w) == len(newest)
    assert np.array_equal(w.values(), newest)
    p50, p99 = w.p50_p99()
    want = np.percentile(newest, (50, 99))
    assert p50 == pytest.approx(want[0], rel=1e-12) and p99 == pytest.approx(want[1], rel=1e-12)


def test_an_empty_window_has_no_percentiles() -> None:
    w = Window(4)
    assert len(w) == 0 and w.values().size == 0
    assert all(math.isnan(x) for x in w.p50_p99())


def test_a_window_of_no_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        Window(0)
