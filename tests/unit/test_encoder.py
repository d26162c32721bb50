from __future__ import annotations

import itertools

import pytest

from controller.core.encoder import WRAP, EncoderHistory, EncoderUnwrapper, signed_diff


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(10, 5, 5), (5, 10, -5), (3, WRAP - 2, 5), (WRAP - 2, 3, -5), (0, 0, 0), (2**31 - 1, 0, 2**31 - 1)],
)
def test_signed_diff_across_rollover(a: int, b: int, expected: int) -> None:
    assert signed_diff(a, b) == expected


def test_unwrapper_counts_through_2_pow_32() -> None:
    u = EncoderUnwrapper()
    raw = WRAP - 1000
    positions = []
    for _ in range(30):
        positions.append(u.update(raw % WRAP))
        raw += 100
    assert positions[-1] - positions[0] == 2900
    assert all(b - a == 100 for a, b in itertools.pairwise(positions))
    # A latch taken just before the wrap, read after it, lands behind the current position.
    assert u.unwrap_past((WRAP - 50) % WRAP) == positions[-1] - (raw - 100 - (WRAP - 50))


def test_history_interpolates_and_extrapolates() -> None:
    h = EncoderHistory()
    assert h.position_at(1.0) is None
    h.add(1.0, 1000)
    h.add(1.01, 1100)
    h.add(1.02, 1200)
    assert h.position_at(1.005) == 1050
    assert h.position_at(1.03) == 1300  # beyond the newest sample, at the belt's speed
    h.add(1.02, 9999)  # not newer: ignored
    assert h.position_at(1.02) == 1200


def test_history_fit_shrugs_off_a_stale_sample() -> None:
    h = EncoderHistory()
    for k in range(30):
        t = k * 0.002
        pos = int(t * 10_000)
        if k == 25:
            pos -= 100  # a sample served 10 ms stale
        h.add(t, pos)
    est = h.position_at(0.05)
    assert est is not None and abs(est - 500) < 15  # two-point interpolation would be 100 off
